"""Headless Debian Chromium with a fake microphone (a WAV file), driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import BrowserContext, sync_playwright

CHROMIUM = "/usr/bin/chromium"


@contextmanager
def chromium_with_mic(
    profile: Path, mic_wav: Path | None, loop: bool = False
) -> Iterator[BrowserContext]:
    """A fresh Chromium profile whose microphone plays `mic_wav` once or in a loop (or silence)."""
    args = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
    ]
    if mic_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={mic_wav}{'' if loop else '%noloop'}")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=args,
            viewport={"width": 1280, "height": 860},
        )
        try:
            yield context
        finally:
            context.close()
