"""The demo page in headless Chromium: speak, hear the reply, interrupt it, settings persist."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.clients.browser import chromium_with_mic
from tests.clients.conftest import speech_file
from tests.helpers import REPO

pytestmark = pytest.mark.browser

OUTPUT = REPO / "test-output" / "clients"


def demo(page, key: str):
    return page.evaluate(f"window.__demo.{key}")


def run_conversation(
    base_url: str, mic_wav: Path, profile: Path, shot: Path, reply_timeout_ms: int = 60_000
) -> dict:
    """Open the page, connect, let the fake mic speak twice; returns the page's figures."""
    with chromium_with_mic(profile, mic_wav) as context:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(base_url + "/")
        page.get_by_role("button", name="Connect").click()
        page.wait_for_function("window.__demo.connected", timeout=15_000)
        # First reply heard, then interrupted by the second utterance.
        page.wait_for_function("window.__demo.truncatesSent.length >= 1", timeout=reply_timeout_ms)
        # The second reply is heard in full and the page is back to listening.
        page.wait_for_function(
            "window.__demo.latencies.length >= 2 && window.__demo.queuedMs === 0"
            " && window.__demo.state === 'listening'",
            timeout=reply_timeout_ms,
        )
        page.wait_for_timeout(300)  # let the worklet's last clock report land
        return collect(page, shot, errors)


def run_steered_conversation(
    base_url: str, mic_wav: Path, profile: Path, shot: Path, timeout_ms: int = 150_000
) -> dict:
    """Like run_conversation, but the test decides when the user talks (with the Mute button),
    from what the page reports, so any server latency works: speak, mute, wait until the
    reply is being heard, unmute (barge-in), speak, mute, wait for the second reply."""
    with chromium_with_mic(profile, mic_wav, loop=True) as context:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(base_url + "/")
        page.get_by_role("button", name="Connect").click()
        page.wait_for_function("window.__demo.connected", timeout=15_000)
        mute = page.locator("#mute")
        page.wait_for_function("window.__demo.state === 'user'", timeout=15_000)
        page.wait_for_timeout(2_000)
        mute.click()
        page.wait_for_function("window.__demo.playbackClockMs > 400", timeout=timeout_ms)
        mute.click()  # unmute: the user talks over the reply
        page.wait_for_function("window.__demo.truncatesSent.length >= 1", timeout=30_000)
        page.wait_for_timeout(1_500)
        mute.click()
        page.wait_for_function(
            "window.__demo.latencies.length >= 2 && window.__demo.queuedMs === 0"
            " && window.__demo.state === 'listening'",
            timeout=timeout_ms,
        )
        page.wait_for_timeout(300)
        return collect(page, shot, errors)


def collect(page, shot: Path, errors: list[str]) -> dict:
    """The page's figures and texts, and a screenshot."""
    figures = page.evaluate(
        """() => { const d = window.__demo; return {
            playbackClockMs: d.playbackClockMs, audioReceivedMs: d.audioReceivedMs,
            audioDiscardedMs: d.audioDiscardedMs, flushedMs: d.flushedMs,
            appendsSent: d.appendsSent, bytesSent: d.bytesSent,
            truncatesSent: d.truncatesSent, latencies: d.latencies,
            lastLatencyMs: d.lastLatencyMs, errors: d.errors, state: d.state,
            model: d.model, voice: d.voice, randomCheckpoint: d.randomCheckpoint}; }"""
    )
    figures["latency_text"] = page.locator("#latency").inner_text()
    figures["assistant_texts"] = page.locator(".msg.assistant .text").all_inner_texts()
    figures["user_bubbles"] = page.locator(".msg.user").count()
    figures["page_errors"] = errors
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    return figures


def check_conversation(fig: dict, exact_turns: bool = True) -> None:
    """The page's side of two turns, the first interrupted. With a real VAD on looping speech
    a turn may split in two (`exact_turns=False`): then at least two."""
    assert fig["page_errors"] == [] and fig["errors"] == []
    # Microphone audio went out in 20 ms appends (~24 kHz pcm16 = 960 bytes each).
    assert fig["appendsSent"] > 100
    assert fig["bytesSent"] == fig["appendsSent"] * 960
    # Everything received was either played or dropped at the barge-in: the clock tracks it.
    accounted = fig["playbackClockMs"] + fig["flushedMs"] + fig["audioDiscardedMs"]
    assert fig["audioReceivedMs"] > 1000
    assert abs(fig["audioReceivedMs"] - accounted) < 50
    assert len(fig["truncatesSent"]) == 1 or (not exact_turns and fig["truncatesSent"])
    truncate = fig["truncatesSent"][0]
    # The truncate carries what was actually played of that reply, and the server took it.
    assert 0 < truncate["audio_end_ms"] <= truncate["received_ms"]
    assert truncate.get("confirmed_ms") == truncate["audio_end_ms"]
    if exact_turns:
        # The fake server sends audio at twice real time: the queue held unplayed audio.
        assert fig["flushedMs"] + fig["audioDiscardedMs"] > 0
        assert truncate["audio_end_ms"] < truncate["received_ms"]
    assert all(ms > 0 for ms in fig["latencies"])
    assert fig["latency_text"] == f"{fig['lastLatencyMs']} ms"
    counts = (len(fig["latencies"]), fig["user_bubbles"], len(fig["assistant_texts"]))
    if exact_turns:
        assert counts == (2, 2, 2)
    else:
        assert min(counts) >= 2
    assert fig["state"] == "listening"


@pytest.fixture(scope="module")
def two_utterances(tmp_path_factory) -> Path:
    """Speech, a pause long enough for the reply to start, speech again, then silence."""
    return speech_file(
        tmp_path_factory.mktemp("mic") / "mic.wav",
        0.5,
        "Hello, can you tell me a story?",
        2.0,
        "Wait, stop please.",
        6.0,
    )


def test_page_speaks_hears_and_interrupts(fake_server, two_utterances, tmp_path):
    fig = run_conversation(
        fake_server, two_utterances, tmp_path / "profile", OUTPUT / "fake-server-conversation.png"
    )
    check_conversation(fig)
    assert fig["randomCheckpoint"] and fig["model"] == "step-audio-2-mini"
    assert all(text.startswith("word0") for text in fig["assistant_texts"])
    log = httpx.get(fake_server + "/test/log").json()
    assert log["subprotocols"][-1] == ["realtime"]
    sent = log["truncates"][-1]
    assert sent["audio_end_ms"] == fig["truncatesSent"][0]["audio_end_ms"]
    # About 1.3 s of the first reply plays before the VAD flags the second utterance.
    assert 300 <= sent["audio_end_ms"] <= 2500


def test_settings_survive_a_reload_and_reach_the_server(fake_server, hello_wav, tmp_path):
    voice_wav = hello_wav
    with chromium_with_mic(tmp_path / "profile", None) as context:
        page = context.new_page()
        page.goto(fake_server + "/")
        page.get_by_label("System instructions").fill("Answer in one short sentence.")
        page.get_by_label("Silence that ends a turn (ms)").fill("800")
        page.get_by_label("Silence that ends a turn (ms)").press("Tab")
        page.get_by_label("Push to talk").check()
        page.get_by_label("Noise suppression").uncheck()
        # A bad upload shows the server's reason; a WAV adds a voice to the picker.
        page.get_by_text("Add a voice").click()
        (tmp_path / "bad.wav").write_bytes(b"not a wav")
        page.get_by_label("Voice sample (WAV, 3–30 s)").set_input_files(tmp_path / "bad.wav")
        page.get_by_label("Name", exact=True).fill("broken")
        page.get_by_role("button", name="Upload voice").click()
        page.get_by_text("not a WAV file").wait_for(timeout=5_000)
        page.get_by_label("Voice sample (WAV, 3–30 s)").set_input_files(voice_wav)
        page.get_by_label("Name", exact=True).fill("mine")
        page.get_by_role("button", name="Upload voice").click()
        page.get_by_text("Voice “mine” added.").wait_for(timeout=5_000)
        assert page.get_by_label("Voice", exact=True).input_value() == "mine"
        page.get_by_label("Voice", exact=True).select_option("narrator")
        page.get_by_label("API key").fill("sk-test")
        page.get_by_label("API key").press("Tab")
        page.reload()
        assert page.get_by_label("System instructions").input_value() == (
            "Answer in one short sentence."
        )
        assert page.get_by_label("Voice", exact=True).input_value() == "narrator"
        assert page.get_by_label("Push to talk").is_checked()
        assert not page.get_by_label("Noise suppression").is_checked()
        assert page.get_by_label("Echo cancellation").is_checked()
        assert page.get_by_label("Silence that ends a turn (ms)").input_value() == "800"
        assert page.get_by_role("button", name="Hold to talk").is_visible()
        # Keyboard only: focus Connect and press Enter.
        page.get_by_role("button", name="Connect").focus()
        page.keyboard.press("Enter")
        page.wait_for_function("window.__demo.connected", timeout=15_000)
        page.wait_for_timeout(500)
        log = httpx.get(fake_server + "/test/log").json()
        assert ["realtime", "openai-insecure-api-key.sk-test"] in log["subprotocols"]
        session = log["sessions"][-1]
        assert session["instructions"] == "Answer in one short sentence."
        assert session["audio"]["output"]["voice"] == "narrator"
        assert session["audio"]["input"]["turn_detection"] is None  # push to talk
        # Push to talk: hold space, speak (silence here), release: commit + response.
        page.locator("body").focus()
        page.keyboard.down("Space")
        page.wait_for_timeout(400)
        page.keyboard.up("Space")
        page.wait_for_function("window.__demo.latencies.length >= 1", timeout=15_000)
        log = httpx.get(fake_server + "/test/log").json()
        assert log["events"].get("input_audio_buffer.commit") == 1
        assert log["events"].get("response.create") == 1
        assert demo(page, "appendsSent") >= 10


def test_a_refused_key_is_a_clear_error(fake_server, tmp_path):
    with chromium_with_mic(tmp_path / "profile", None) as context:
        page = context.new_page()
        page.goto(fake_server + "/")
        page.get_by_label("API key").fill("sk-wrong")
        page.get_by_role("button", name="Connect").click()
        page.get_by_text("the server refused the connection").wait_for(timeout=15_000)
        assert not demo(page, "connected") and demo(page, "state") == "disconnected"
        assert page.get_by_role("button", name="Connect").is_enabled()
        # Dismissable, and the page works on: the right key connects.
        page.get_by_role("button", name="Dismiss error").click()
        assert page.locator(".error").count() == 0
        page.get_by_label("API key").fill("sk-right")
        page.get_by_role("button", name="Connect").click()
        page.wait_for_function("window.__demo.connected", timeout=15_000)
