"""Subcommands of the clients: `talk` (Python client) and `loadgen` (load generator)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from clients import loadgen
    from clients.python import talk

    parser = subparsers.add_parser(
        "talk", help="speak a WAV file or the microphone to a realtime server"
    )
    talk.add_arguments(parser)
    parser.set_defaults(func=talk.run)

    parser = subparsers.add_parser("loadgen", help="simulate N users talking to a server")
    loadgen.add_arguments(parser)
    parser.set_defaults(func=loadgen.run)
