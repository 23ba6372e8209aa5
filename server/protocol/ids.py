"""Random identifiers for events, items, responses and sessions, shaped like OpenAI's."""

from __future__ import annotations

import secrets

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def new_id(prefix: str, length: int = 20) -> str:
    """`prefix` + "_" + `length` random alphanumerics, e.g. ``new_id("item")`` -> "item_Ab3..."."""
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_event_id() -> str:
    return new_id("event")


def new_item_id() -> str:
    return new_id("item")


def new_response_id() -> str:
    return new_id("resp")


def new_call_id() -> str:
    return new_id("call")


def new_session_id() -> str:
    return new_id("sess")


def new_conversation_id() -> str:
    return new_id("conv")
