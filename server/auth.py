"""API-key checks for the websocket handshake: Bearer header or the browser subprotocol key."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."


@dataclass(frozen=True)
class AuthResult:
    """`status` is 200 when accepted, else the HTTP status to refuse the handshake with."""

    status: int
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


def presented_key(headers: Mapping[str, str], subprotocols: Sequence[str]) -> str | None:
    """The key the client offered, from `Authorization: Bearer` or the subprotocol list."""
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for proto in subprotocols:
        if proto.startswith(KEY_SUBPROTOCOL_PREFIX):
            return proto[len(KEY_SUBPROTOCOL_PREFIX):]
    return None


def check_key(keys: Sequence[str], offered: str | None) -> AuthResult:
    """401 when a key is required but none was given, 403 for a wrong key."""
    if not keys:
        return AuthResult(200)
    if offered is None:
        return AuthResult(401, "missing API key (Authorization: Bearer <key>)")
    # Constant-time comparison against every key, so timing does not tell which one is close.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(key.encode(), offered.encode())
    return AuthResult(200) if matched else AuthResult(403, "invalid API key")
