"""Voices REST: `GET /v1/voices` lists the prompt voices, `POST /v1/voices` registers a WAV."""

from __future__ import annotations

import logging
import re
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from pydantic import BaseModel

from server.auth import check_key, presented_key
from tokenizer_audio.types import VoiceError

log = logging.getLogger("server.voices")


def require_api_key(request: Request) -> None:
    """The same keys as the websocket: voices are server state, not public when keys are set."""
    result = check_key(request.app.state.gateway.settings.api_keys,
                       presented_key(request.headers, ()))
    if not result.ok:
        raise HTTPException(status_code=result.status, detail=result.message,
                            headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(prefix="/v1/voices", tags=["voices"], dependencies=[Depends(require_api_key)])

MAX_VOICE_BYTES = 8 * 1024 * 1024  # 30 s of 48 kHz stereo int16 is ~5.8 MB
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class VoiceList(BaseModel):
    object: str = "list"
    data: list[dict[str, str]]
    default: str


def _token2wav(request: Request):
    gateway = request.app.state.gateway
    if gateway.services is None:
        raise HTTPException(status_code=503, detail="model is loading")
    return gateway.services.token2wav


def _listing(token2wav) -> VoiceList:
    default = token2wav.default_voice
    return VoiceList(
        data=[{"id": name, "name": name, "object": "voice"} for name in token2wav.voice_names()],
        default=default,
    )


@router.get("", response_model=VoiceList)
async def list_voices(request: Request) -> VoiceList:
    return _listing(_token2wav(request))


@router.post("", response_model=VoiceList, status_code=201)
async def add_voice(
    request: Request,
    name: Annotated[str, Form()],
    file: Annotated[UploadFile, File()],
) -> VoiceList:
    """Register a prompt WAV (3-30 s of speech) under `name`; 400 with the reason otherwise."""
    token2wav = _token2wav(request)
    if not _NAME.match(name):
        raise HTTPException(
            status_code=400,
            detail="voice name must be 1-64 characters of letters, digits, '_', '.', '-'",
        )
    data = await file.read(MAX_VOICE_BYTES + 1)
    if len(data) > MAX_VOICE_BYTES:
        raise HTTPException(status_code=413, detail=f"WAV larger than {MAX_VOICE_BYTES} bytes")
    try:
        await token2wav.add_voice(name, data)
    except VoiceError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    log.info("voice registered", extra={"voice": name, "bytes": len(data)})
    return _listing(token2wav)
