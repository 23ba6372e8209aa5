"""The `/v1/realtime` websocket endpoint: handshake checks (auth, session limit), then a session."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from server.auth import check_key, presented_key
from server.protocol import choose_subprotocol, detect_dialect
from server.protocol.ids import new_session_id
from server.session import RealtimeSession

log = logging.getLogger("server.realtime")

router = APIRouter()


def _refusal(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": "invalid_request_error", "code": code, "message": message}},
        status_code=status,
    )


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket, model: str | None = None) -> None:
    """OpenAI Realtime API over a websocket. `?model=` is accepted (one model is served)."""
    gateway = websocket.app.state.gateway
    settings = gateway.settings
    offered = list(websocket.scope.get("subprotocols") or [])
    auth = check_key(settings.api_keys, presented_key(websocket.headers, offered))
    if not auth.ok:
        code = "missing_api_key" if auth.status == 401 else "invalid_api_key"
        await websocket.send_denial_response(_refusal(auth.status, code, auth.message))
        return
    if gateway.services is None:
        await websocket.send_denial_response(_refusal(503, "not_ready", "the model is loading"))
        return
    if len(gateway.sessions) >= settings.max_sessions:
        log.warning("session limit reached", extra={"max_sessions": settings.max_sessions})
        await websocket.send_denial_response(_refusal(
            503, "too_many_sessions",
            f"the server is at its limit of {settings.max_sessions} sessions; retry later"))
        return
    dialect = detect_dialect(websocket.headers, offered)
    session = RealtimeSession(websocket, gateway, dialect, new_session_id())
    gateway.sessions.add(session)  # before the first await: the limit check stays exact
    try:
        await websocket.accept(subprotocol=choose_subprotocol(offered))
        if model is not None and model != settings.model_name:
            log.info("client asked for another model name",
                     extra={"requested": model, "served": settings.model_name})
        await session.run()
    finally:
        gateway.sessions.discard(session)


async def close_all_sessions(gateway, timeout: float) -> None:
    """Graceful shutdown: every session cancels its response and closes with code 1001."""
    sessions = list(gateway.sessions)
    if not sessions:
        return
    await asyncio.gather(*(s.shutdown() for s in sessions), return_exceptions=True)
    waits = [asyncio.create_task(s.closed.wait()) for s in sessions]
    _done, pending = await asyncio.wait(waits, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        log.warning("sessions still open after shutdown timeout", extra={"open": len(pending)})
