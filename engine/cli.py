"""`stepaudio2-rt` subcommands of the engine package: make-checkpoint, manifest and generate."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the engine's subcommands to the `stepaudio2-rt` parser (heavy imports stay inside)."""
    make = subparsers.add_parser(
        "make-checkpoint",
        help="write a random checkpoint in the Step-Audio-2-mini layout (for tests and demos)",
        description="Write config.json, tokenizer files, bf16 safetensors shards and token2wav/ "
        "with random weights. --tiny: ~50 MB, for tests; --full: the released shapes (16.6 GB).",
    )
    size = make.add_mutually_exclusive_group(required=True)
    size.add_argument("--tiny", dest="size", action="store_const", const="tiny")
    size.add_argument("--full", dest="size", action="store_const", const="full")
    make.add_argument("directory", metavar="DIR", type=Path)
    make.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    make.set_defaults(func=_make_checkpoint)

    manifest = subparsers.add_parser(
        "manifest",
        help="print the tensor names and shapes our modules expect, as JSON {name: shape}",
    )
    source = manifest.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, metavar="FILE",
                        help="LLM checkpoint tensors for a config.json (or its directory)")
    source.add_argument("--flow-yaml", type=Path, metavar="FILE",
                        help="token2wav/flow.pt tensors for a flow.yaml")
    source.add_argument("--hift", action="store_true", help="token2wav/hift.pt tensors")
    manifest.set_defaults(func=_manifest)

    generate = subparsers.add_parser(
        "generate",
        help="answer one spoken turn (WAV) and print JSON: text, audio codes, tool calls, timings",
    )
    generate.add_argument("--model", type=Path, required=True, metavar="DIR",
                          help="Step-Audio-2-mini directory (the tokenizer always comes from it)")
    generate.add_argument("--audio", type=Path, required=True, metavar="WAV",
                          help="the user's speech (any rate; the first channel is used)")
    generate.add_argument("--text", help="text that follows the audio in the user turn")
    generate.add_argument("--speech", action="store_true", help="ask for a spoken reply")
    generate.add_argument("--system", help="system prompt")
    generate.add_argument("--max-tokens", type=int, default=512)
    generate.add_argument("--seed", type=int, help="sampling seed (reproducible output)")
    generate.add_argument("--engine-url", action="append", default=[], metavar="URL",
                          help="vLLM server(s) running the plugin; default: in-process vLLM")
    generate.set_defaults(func=_generate)


def _make_checkpoint(args: argparse.Namespace) -> int:
    from engine.checkpoint import write_checkpoint

    write_checkpoint(args.directory, size=args.size, seed=args.seed)
    return 0


def format_manifest(manifest: dict[str, list[int]]) -> str:
    """One tensor per line, in order (the layout of the spec's manifest files)."""
    lines = [f"  {json.dumps(name)}: {json.dumps(shape)}" for name, shape in manifest.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _manifest(args: argparse.Namespace) -> int:
    if args.config is not None:
        from engine.config import ConfigError, load_config
        from engine.manifest import llm_manifest

        try:
            result = llm_manifest(load_config(args.config))
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    elif args.flow_yaml is not None:
        from tokenizer_audio.manifest import flow_manifest

        result = flow_manifest(args.flow_yaml)
    else:
        from tokenizer_audio.manifest import hift_manifest

        result = hift_manifest()
    sys.stdout.write(format_manifest(result))
    return 0


def _read_wav_16k(path: Path):  # noqa: ANN202 - numpy array
    """First channel of a WAV, as float32 at 16 kHz."""
    from math import gcd

    import numpy as np
    import soundfile
    from scipy.signal import resample_poly

    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = samples[:, 0]
    if rate != 16_000:
        g = gcd(int(rate), 16_000)
        mono = resample_poly(mono, 16_000 // g, int(rate) // g).astype(np.float32)
    return mono


async def _generate_async(args: argparse.Namespace) -> dict:
    import time

    from engine.factory import create_engine
    from engine.parser import AudioCodes, OutputParser, TextDelta, ToolCall
    from engine.prompt import System, User, build_prompt
    from engine.types import EngineRequest, SamplingParams

    audio = _read_wav_16k(args.audio)
    messages = [System(args.system)] if args.system else []
    messages.append(User((audio, args.text) if args.text else (audio,)))
    prompt = build_prompt(messages, speech=args.speech)
    engine = await create_engine(args.model, engine_urls=args.engine_url)
    try:
        parser = OutputParser(engine.tokenizer, engine.special)
        request = EngineRequest("generate-cli", prompt,
                                SamplingParams(max_tokens=args.max_tokens, seed=args.seed))
        text, codes, calls = [], [], []
        prompt_tokens, first_at, n_tokens, finish = None, None, 0, None
        started = time.perf_counter()
        async for delta in engine.generate(request):
            if delta.prompt_tokens is not None:
                prompt_tokens = delta.prompt_tokens
            if delta.token_ids and first_at is None:
                first_at = time.perf_counter()
            n_tokens += len(delta.token_ids)
            events = parser.feed(delta.token_ids)
            if delta.finish_reason is not None:
                finish = delta.finish_reason
                events += parser.finish(delta.finish_reason)
            for event in events:
                if isinstance(event, TextDelta):
                    text.append(event.text)
                elif isinstance(event, AudioCodes):
                    codes.extend(event.codes)
                elif isinstance(event, ToolCall):
                    calls.append({"name": event.name, "arguments": event.arguments})
        ended = time.perf_counter()
    finally:
        await engine.close()
    decode_s = ended - first_at if first_at is not None else 0.0
    rate = round((n_tokens - 1) / decode_s, 2) if n_tokens > 1 and decode_s > 0 else None
    return {
        "text": "".join(text),
        "audio_codes": codes,
        "tool_calls": calls,
        "finish_reason": finish,
        "timings": {
            "prompt_tokens": prompt_tokens,
            "generated_tokens": n_tokens,
            "time_to_first_token_s": None if first_at is None else round(first_at - started, 4),
            "tokens_per_s": rate,
            "total_s": round(ended - started, 4),
        },
    }


def _generate(args: argparse.Namespace) -> int:
    import asyncio
    import os

    # stdout carries only the JSON result: vLLM logs to stdout unless told otherwise.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

    from engine.config import ConfigError
    from engine.loading import CheckpointError
    from engine.types import EngineError

    if not args.audio.is_file():
        print(f"error: {args.audio}: no such file", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(_generate_async(args))
    except (CheckpointError, ConfigError, EngineError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0
