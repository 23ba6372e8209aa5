"""`stepaudio2-rt loadgen`: N simulated users talking to a realtime server turn after turn.

Each user streams a speech file in real time, waits for the reply to be generated and heard
(simulated real-time playback), then speaks again; with `--barge-in-rate P` a turn is, with
probability P, interrupted by the next utterance part-way into the reply (with a truncate, as a
real client does). Reports turn latency percentiles, audio underruns (reply audio arriving
slower than real time) and errors by code; `--json` writes the same figures for `bench/`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import websockets

from clients.python.audio import read_wav
from clients.python.conversation import Conversation
from clients.python.realtime import (
    BENIGN_ERROR_CODES,
    DEFAULT_URL,
    RealtimeClient,
    RealtimeConnectionError,
    session_update,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help="realtime websocket URL")
    parser.add_argument("--users", type=int, default=10, help="simultaneous sessions")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument(
        "--file",
        type=Path,
        required=True,
        action="append",
        help="speech WAV (repeat for several; users take turns through them)",
    )
    parser.add_argument(
        "--barge-in-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that a reply is interrupted by the next utterance",
    )
    parser.add_argument("--pause", type=float, default=0.5, help="silence between turns (s)")
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds over which users join")
    parser.add_argument("--api-key", help="API key (sent as Authorization: Bearer)")
    parser.add_argument("--model", default="step-audio-2-mini")
    parser.add_argument("--voice", help="voice name")
    parser.add_argument("--max-output-tokens", type=int, help="cap the length of each reply")
    parser.add_argument(
        "--turn-timeout",
        type=float,
        default=60.0,
        help="seconds a reply may take before it counts as an error",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the report as JSON here")


class Stats:
    """Figures gathered across all users."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.turns = 0
        self.interrupted = 0
        self.underruns = 0
        self.stall_s = 0.0
        self.audio_s = 0.0
        self.errors: Counter[str] = Counter()

    def add_conversation(self, conv: Conversation) -> None:
        for turn in conv.turns:
            if turn.playback.first_audio_at is None and not turn.done:
                continue  # an utterance still waiting when the run ended
            self.turns += 1
            self.interrupted += int(turn.interrupted)
            if turn.latency_ms is not None:
                self.latencies_ms.append(turn.latency_ms)
            self.underruns += turn.playback.underruns
            self.stall_s += turn.playback.stall_s
            self.audio_s += turn.received_ms / 1000.0
        self.errors.update(conv.errors)


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


async def run_user(
    index: int, args: argparse.Namespace, files: list[np.ndarray], deadline: float, stats: Stats
) -> None:
    rng = random.Random(args.seed * 1000 + index)
    await asyncio.sleep(args.ramp * index / max(args.users, 1))
    client = RealtimeClient(args.url, api_key=args.api_key, model=args.model)
    try:
        await client.connect()
    except RealtimeConnectionError:
        stats.errors["connect_failed"] += 1
        return
    conv = Conversation(client)
    receiver = asyncio.create_task(conv.receive())
    try:
        await client.send(
            session_update(voice=args.voice, max_output_tokens=args.max_output_tokens)
        )
        n = 0
        while time.monotonic() < deadline and not conv.closed:
            await conv.stream(files[n % len(files)])
            n += 1
            turns_before = len(conv.turns)
            if rng.random() < args.barge_in_rate:
                # Speak again once some of the reply was heard (the next stream() barges in).
                heard_ms = rng.uniform(200, 1200)

                def heard(limit: float = heard_ms, before: int = turns_before) -> bool:
                    turn = conv.playing()
                    return (turn is not None and turn.playback.played_ms() >= limit) or (
                        len(conv.turns) > before and conv.settled()
                    )

                if not await conv.stream_silence_until(heard, args.turn_timeout):
                    break
            else:
                if not await conv.stream_silence_until(conv.settled, args.turn_timeout):
                    break
                pause_until = time.monotonic() + args.pause
                await conv.stream_silence_until(lambda t=pause_until: time.monotonic() >= t, 60)
        else:
            # Out of time: let the reply in flight finish so it is counted, not cut.
            if not conv.closed and conv.turns and not conv.settled():
                if not await conv.stream_silence_until(conv.settled, args.turn_timeout):
                    stats.errors["turn_timeout"] += 1
            return
        if conv.closed:
            stats.errors["connection_closed"] += 1
        else:
            stats.errors["turn_timeout"] += 1
    except websockets.ConnectionClosed:
        stats.errors["connection_closed"] += 1
    finally:
        await client.close()
        await receiver
        stats.add_conversation(conv)


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    files = [read_wav(path) for path in args.file]
    stats = Stats()
    started = time.monotonic()
    deadline = started + args.duration
    print(
        f"loadgen: {args.users} users for {args.duration:g} s against {args.url}", file=sys.stderr
    )
    progress = asyncio.create_task(_progress(started, deadline))
    try:
        await asyncio.gather(
            *(run_user(i, args, files, deadline, stats) for i in range(args.users))
        )
    finally:
        progress.cancel()
    return report(args, stats, time.monotonic() - started)


async def _progress(started: float, deadline: float) -> None:
    while True:
        await asyncio.sleep(5.0)
        left = max(0.0, deadline - time.monotonic())  # then users finish their last turn
        print(
            f"loadgen: {time.monotonic() - started:.0f} s elapsed, {left:.0f} s of load left",
            file=sys.stderr,
        )


def report(args: argparse.Namespace, stats: Stats, elapsed: float) -> dict[str, Any]:
    lat = stats.latencies_ms
    fatal = {code: n for code, n in stats.errors.items() if code not in BENIGN_ERROR_CODES}
    return {
        "users": args.users,
        "duration_s": args.duration,
        "elapsed_s": round(elapsed, 2),
        "barge_in_rate": args.barge_in_rate,
        "turns": stats.turns,
        "interrupted_turns": stats.interrupted,
        "latency_ms": {
            "count": len(lat),
            "p50": percentile(lat, 50),
            "p90": percentile(lat, 90),
            "p99": percentile(lat, 99),
            "mean": float(np.mean(lat)) if lat else None,
            "max": max(lat) if lat else None,
        },
        "reply_audio_s": round(stats.audio_s, 2),
        "underruns": stats.underruns,
        "underrun_stall_s": round(stats.stall_s, 3),
        "errors": sum(fatal.values()),
        "errors_by_code": dict(stats.errors),
    }


def print_table(result: dict[str, Any]) -> None:
    lat = result["latency_ms"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    rows = [
        ("users", str(result["users"])),
        ("duration (s)", f"{result['duration_s']:g}"),
        ("turns", str(result["turns"])),
        ("interrupted turns", str(result["interrupted_turns"])),
        ("latency p50 / p90 / p99 (ms)", f"{ms(lat['p50'])} / {ms(lat['p90'])} / {ms(lat['p99'])}"),
        ("reply audio (s)", f"{result['reply_audio_s']:.1f}"),
        ("underruns (stall s)", f"{result['underruns']} ({result['underrun_stall_s']:.2f})"),
        ("errors", str(result["errors"])),
    ]
    rows += [(f"  {code}", str(n)) for code, n in sorted(result["errors_by_code"].items())]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def run(args: argparse.Namespace) -> int:
    if args.users < 1 or args.duration <= 0 or not 0.0 <= args.barge_in_rate <= 1.0:
        print(
            "error: need --users >= 1, --duration > 0, 0 <= --barge-in-rate <= 1", file=sys.stderr
        )
        return 2
    try:
        result = asyncio.run(run_load(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_table(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 1 if result["errors"] else 0
