"""The `stepaudio2-rt` command: one entry point, one subcommand module per package.

Each subcommand lives beside the code it drives (`engine/cli.py`, `tokenizer_audio/cli.py`,
`server/serve_cli.py`, `clients/cli.py`) and exposes `register(subparsers)`; heavy imports
(torch, vLLM) happen inside the command, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute subcommands, in the order `--help` lists them.
_COMMAND_MODULES = (
    "server.serve_cli",
    "engine.cli",
    "tokenizer_audio.cli",
    "clients.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stepaudio2-rt",
        description="Realtime speech-to-speech server for Step-Audio 2.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A package that is not built yet must not take the other commands down.
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
