"""`stepaudio2-rt synthesize`: audio codes (JSON) + prompt voice -> 24 kHz mono 16-bit WAV."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

MAX_CODE = 6560  # FSQ 3^8 - 1 (spec f.1)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the token2wav subcommands."""
    p = subparsers.add_parser(
        "synthesize",
        help="turn audio codes into speech in the timbre of a prompt voice",
        description="Synthesize a JSON list of audio codes (0..6560, 25 per second) into a "
        "24 kHz mono 16-bit WAV with token2wav.",
    )
    p.add_argument("--model", required=True, type=Path,
                   help="checkpoint directory holding token2wav/, or a token2wav directory")
    p.add_argument("--codes", required=True, type=Path, help="JSON file: a list of codes")
    p.add_argument("--voice", type=Path, default=None,
                   help="prompt WAV (3-30 s of speech, any rate); default: the packaged voice")
    p.add_argument("-o", "--output", required=True, type=Path, help="output WAV path")
    p.add_argument("--stream", action="store_true",
                   help="synthesize chunk by chunk as a stream would (25 + 3 codes per step)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the vocoder's source noise")
    p.set_defaults(func=_synthesize)


def read_codes(path: Path) -> list[int]:
    """The codes of a JSON file; ValueError with the reason when it is not a list of 0..6560."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read codes from {path}: {exc}") from exc
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path} must hold a non-empty JSON list of codes")
    for i, code in enumerate(data):
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= MAX_CODE:
            raise ValueError(f"{path}: item {i} ({code!r}) is not a code in 0..{MAX_CODE}")
    return data


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Float samples -> 16-bit PCM mono WAV (clipped to [-1, 1])."""
    import soundfile as sf

    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), pcm, sample_rate, subtype="PCM_16")


def _synthesize(args: argparse.Namespace) -> int:
    from tokenizer_audio.token2wav import Token2wav
    from tokenizer_audio.types import OUTPUT_SAMPLE_RATE, VoiceError

    try:
        codes = read_codes(args.codes)
        voice_bytes = args.voice.read_bytes() if args.voice is not None else None
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        t2w = Token2wav(args.model, device=args.device)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: cannot load token2wav from {args.model}: {exc}", file=sys.stderr)
        return 1
    assert t2w.voices is not None
    try:
        voice = (t2w.voices.get(t2w.voices.default_name) if voice_bytes is None
                 else t2w.voices.add("prompt", voice_bytes))
    except VoiceError as exc:
        print(f"error: unusable prompt voice: {exc}", file=sys.stderr)
        return 2
    print(f"synthesizing {len(codes)} codes ({len(codes) / 25:.2f} s)"
          f"{' as a stream' if args.stream else ''}", file=sys.stderr)
    if args.stream:
        stream = t2w.stream(voice, seed=args.seed)
        parts = [stream.feed(codes), stream.finish()]
        wav = np.concatenate(parts)
    else:
        import torch

        wav = t2w.offline(codes, voice, generator=torch.Generator().manual_seed(args.seed))
    write_wav(args.output, wav, OUTPUT_SAMPLE_RATE)
    print(f"wrote {args.output} ({len(wav) / OUTPUT_SAMPLE_RATE:.2f} s)", file=sys.stderr)
    return 0
