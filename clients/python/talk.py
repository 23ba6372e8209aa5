"""`stepaudio2-rt talk`: speak a WAV file or the microphone to a realtime server, hear the reply."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from clients.python.audio import SAMPLE_RATE, from_pcm16, read_wav, write_wav
from clients.python.conversation import Conversation
from clients.python.realtime import (
    DEFAULT_URL,
    RealtimeClient,
    RealtimeConnectionError,
    session_update,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help="realtime websocket URL")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", type=Path, help="speech to send (any WAV; resampled to 24 kHz)")
    source.add_argument("--mic", action="store_true", help="talk through microphone and speakers")
    parser.add_argument("--speed", type=float, default=1.0, help="stream X times real time")
    parser.add_argument("-o", "--output", type=Path, help="write the reply audio (as heard) here")
    parser.add_argument(
        "--interrupt-after",
        type=int,
        metavar="MS",
        help="barge in: speak the file again once MS of the reply was heard",
    )
    parser.add_argument("--voice", help="voice name (see GET /v1/voices)")
    parser.add_argument("--instructions", help="system instructions for the session")
    parser.add_argument("--api-key", help="API key (sent as Authorization: Bearer)")
    parser.add_argument("--model", default="step-audio-2-mini")
    parser.add_argument("--beta", action="store_true", help="speak the beta dialect")
    parser.add_argument("--transcribe", action="store_true", help="ask for user transcripts")
    parser.add_argument("--max-output-tokens", type=int, help="cap the length of each reply")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait per reply")
    parser.add_argument("--json", type=Path, help="write per-turn figures as JSON here")


def _printer(kind: str, text: str) -> None:
    if kind == "user":
        print(f"you: {text}", flush=True)
    elif kind == "assistant.delta":
        print(text, end="", flush=True)
    elif kind == "assistant.end":
        print(flush=True)
    elif kind == "error":
        print(f"server error: {text}", file=sys.stderr, flush=True)


def _session_event(args: argparse.Namespace) -> dict[str, Any]:
    return session_update(
        beta=args.beta,
        voice=args.voice,
        instructions=args.instructions,
        transcription=args.transcribe,
        max_output_tokens=args.max_output_tokens,
    )


async def talk_file(args: argparse.Namespace) -> int:
    audio = read_wav(args.file)
    client = RealtimeClient(args.url, api_key=args.api_key, model=args.model, beta=args.beta)
    await client.connect()
    conv = Conversation(client, speed=args.speed, keep_audio=True, on_text=_printer)
    receiver = asyncio.create_task(conv.receive())
    ok = True
    try:
        await client.send(_session_event(args))
        await conv.stream(audio)
        if args.interrupt_after is not None:
            limit = args.interrupt_after

            def heard_enough() -> bool:
                turn = conv.playing()
                return turn is not None and turn.playback.played_ms() >= limit

            ok = await conv.stream_silence_until(
                lambda: heard_enough() or conv.settled(), args.timeout
            )
            if ok and conv.playing() is not None:
                print(f"[interrupting after {limit} ms of the reply]", file=sys.stderr)
                await conv.stream(audio)
        if ok:
            ok = await conv.stream_silence_until(conv.replies_done, args.timeout)
    finally:
        await client.close()
        await receiver
    for turn in conv.turns:
        figures = turn.summary()
        latency = figures["latency_ms"]
        cut = (
            f", interrupted at {turn.truncated_ms} ms"
            if turn.interrupted and turn.truncated_ms is not None
            else ""
        )
        print(
            f"turn {turn.index}: latency {latency if latency is not None else '-'} ms, "
            f"reply {figures['reply_ms_received'] / 1000:.2f} s "
            f"({figures['status']}{cut})",
            file=sys.stderr,
        )
    if args.output is not None:
        pcm = b"".join(turn.heard_pcm() for turn in conv.turns)
        write_wav(args.output, from_pcm16(pcm))
        seconds = len(pcm) / 2 / SAMPLE_RATE
        print(f"wrote {seconds:.2f} s of reply to {args.output}", file=sys.stderr)
    if args.json is not None:
        report = {
            "turns": [t.summary() for t in conv.turns],
            "errors_by_code": dict(conv.errors),
            "completed": ok,
        }
        args.json.write_text(json.dumps(report, indent=2))
    if not ok:
        why = "the connection closed" if conv.closed else f"no reply within {args.timeout:g} s"
        print(f"error: {why}", file=sys.stderr)
        return 1
    return 1 if conv.fatal_errors() else 0


async def talk_mic(args: argparse.Namespace) -> int:
    try:
        from clients.python.mic import talk_microphone
    except (ImportError, OSError) as exc:  # OSError: sounddevice without the PortAudio library
        print(
            f"error: --mic needs the optional `sounddevice` package ({exc}); install it with "
            "`pip install 'stepaudio2-realtime[mic]'` (and the PortAudio library), or use --file",
            file=sys.stderr,
        )
        return 2
    client = RealtimeClient(args.url, api_key=args.api_key, model=args.model, beta=args.beta)
    await client.connect()
    try:
        return await talk_microphone(client, _session_event(args), _printer)
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    if args.speed <= 0:
        print("error: --speed must be positive", file=sys.stderr)
        return 2
    try:
        return asyncio.run(talk_mic(args) if args.mic else talk_file(args))
    except RealtimeConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # unreadable input file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
