"""A small fake realtime server for client tests: energy VAD, tone replies, barge-in, truncate.

It speaks the subset of the protocol the clients use (GA names), serves clients/web/ at `/`,
`/v1/info` and `/v1/voices`, and records what clients sent at `GET /test/log`, so tests can
check the clients' side of a conversation without the model. Run it as
`python -m tests.clients.fake_realtime_server --port P [--reply-seconds S]`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Form, HTTPException, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.staticfiles import StaticFiles

WEB = Path(__file__).resolve().parents[2] / "clients" / "web"
RATE = 24_000
FRAME = RATE // 50  # 20 ms VAD frames


def create_app(reply_seconds: float, pace: float) -> FastAPI:
    app = FastAPI()
    ids = itertools.count(1)
    log: dict[str, Any] = {"events": {}, "truncates": [], "subprotocols": [], "sessions": []}
    voices = ["default", "narrator"]

    def new_id(prefix: str) -> str:
        return f"{prefix}_{next(ids):06d}"

    @app.get("/v1/info")
    async def info() -> dict[str, Any]:
        return {"model": "step-audio-2-mini", "default_voice": "default", "test_checkpoint": True}

    @app.get("/v1/voices")
    async def list_voices() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": v, "name": v} for v in voices],
            "default": "default",
        }

    @app.post("/v1/voices", status_code=201)
    async def add_voice(name: str = Form(...), file: UploadFile = Form(...)) -> dict[str, Any]:
        if not (await file.read()).startswith(b"RIFF"):
            raise HTTPException(status_code=400, detail="not a WAV file")
        voices.append(name)
        return await list_voices()

    @app.get("/test/log")
    async def get_log() -> dict[str, Any]:
        return log

    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket) -> None:
        offered = ws.scope.get("subprotocols") or []
        log["subprotocols"].append(offered)
        if "openai-insecure-api-key.sk-wrong" in offered:
            await ws.close(code=1008)  # refused before the handshake: HTTP 403
            return
        await ws.accept(subprotocol="realtime" if "realtime" in offered else None)
        session = Session(ws, new_id, log, reply_seconds, pace)
        await session.run()

    app.mount("/", StaticFiles(directory=WEB, html=True), name="web")
    return app


class Session:
    def __init__(self, ws: WebSocket, new_id, log: dict, reply_seconds: float, pace: float):
        self.ws = ws
        self.new_id = new_id
        self.log = log
        self.reply_seconds = reply_seconds
        self.pace = pace
        self.vad = True
        self.silence_ms = 500
        self.transcribe = False
        self.buffer = np.zeros(0, dtype=np.float32)  # samples not yet framed
        self.input_ms = 0
        self.speech_frames = 0
        self.silent_frames = 0
        self.in_speech = False
        self.user_item: str | None = None
        self.response: asyncio.Task | None = None
        self.sent_ms: dict[str, int] = {}  # assistant item -> ms of audio sent

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send_text(json.dumps({"event_id": self.new_id("event"), **event}))

    async def error(self, code: str, message: str, event_id: str | None) -> None:
        await self.send(
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": code,
                    "message": message,
                    "event_id": event_id,
                },
            }
        )

    async def run(self) -> None:
        await self.send({"type": "session.created", "session": {"type": "realtime"}})
        try:
            while True:
                event = json.loads(await self.ws.receive_text())
                kind = event.get("type")
                self.log["events"][kind] = self.log["events"].get(kind, 0) + 1
                await self.handle(kind, event)
        except WebSocketDisconnect:
            pass
        finally:
            if self.response is not None:
                self.response.cancel()

    async def handle(self, kind: str, event: dict[str, Any]) -> None:
        if kind == "session.update":
            s = event.get("session") or {}
            self.log["sessions"].append(s)
            audio_in = (s.get("audio") or {}).get("input") or {}
            td = audio_in.get("turn_detection", s.get("turn_detection", {"type": "server_vad"}))
            self.vad = td is not None
            if td:
                self.silence_ms = int(td.get("silence_duration_ms", 500))
            self.transcribe = bool(
                audio_in.get("transcription") or s.get("input_audio_transcription")
            )
            await self.send({"type": "session.updated", "session": s})
        elif kind == "input_audio_buffer.append":
            pcm = np.frombuffer(base64.b64decode(event["audio"]), "<i2") / 32768.0
            await self.feed(pcm.astype(np.float32))
        elif kind == "input_audio_buffer.commit":
            await self.commit()
        elif kind == "response.create":
            self.start_response()
        elif kind == "response.cancel":
            if self.response is None or self.response.done():
                await self.error(
                    "response_cancel_not_active",
                    "Cancellation failed: no active response found",
                    event.get("event_id"),
                )
            else:
                self.response.cancel()
        elif kind == "conversation.item.truncate":
            item, end_ms = event.get("item_id"), int(event.get("audio_end_ms", -1))
            self.log["truncates"].append(
                {"item_id": item, "audio_end_ms": end_ms, "sent_ms": self.sent_ms.get(item)}
            )
            if item not in self.sent_ms or not 0 <= end_ms <= self.sent_ms[item]:
                await self.error(
                    "invalid_value", "truncate past the audio sent", event.get("event_id")
                )
                return
            await self.send(
                {
                    "type": "conversation.item.truncated",
                    "item_id": item,
                    "content_index": 0,
                    "audio_end_ms": end_ms,
                }
            )
        else:
            await self.error("unknown_event", f"unsupported event {kind}", event.get("event_id"))

    async def feed(self, pcm: np.ndarray) -> None:
        self.buffer = np.concatenate([self.buffer, pcm])
        while len(self.buffer) >= FRAME:
            frame, self.buffer = self.buffer[:FRAME], self.buffer[FRAME:]
            self.input_ms += 20
            if not self.vad:
                continue
            loud = float(np.sqrt(np.mean(frame**2))) > 0.01
            self.speech_frames = self.speech_frames + 1 if loud else 0
            self.silent_frames = 0 if loud else self.silent_frames + 1
            if not self.in_speech and self.speech_frames >= 2:
                self.in_speech = True
                self.user_item = self.new_id("item")
                if self.response is not None and not self.response.done():
                    self.response.cancel()  # barge-in
                await self.send(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": self.input_ms - 40,
                        "item_id": self.user_item,
                    }
                )
            elif self.in_speech and self.silent_frames * 20 >= self.silence_ms:
                self.in_speech = False
                await self.send(
                    {
                        "type": "input_audio_buffer.speech_stopped",
                        "audio_end_ms": self.input_ms - self.silence_ms,
                        "item_id": self.user_item,
                    }
                )
                await self.commit()

    async def commit(self) -> None:
        item = self.user_item or self.new_id("item")
        self.user_item = None
        await self.send({"type": "input_audio_buffer.committed", "item_id": item})
        await self.send(
            {
                "type": "conversation.item.added",
                "item": {"id": item, "type": "message", "role": "user", "content": []},
            }
        )
        if self.transcribe:
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item,
                    "content_index": 0,
                    "transcript": "hello there",
                }
            )
        if self.vad:
            self.start_response()

    def start_response(self) -> None:
        if self.response is None or self.response.done():
            self.response = asyncio.create_task(self.respond())

    async def respond(self) -> None:
        rid, item = self.new_id("resp"), self.new_id("item")
        base = {"response_id": rid, "item_id": item, "output_index": 0, "content_index": 0}
        await self.send(
            {"type": "response.created", "response": {"id": rid, "status": "in_progress"}}
        )
        await self.send(
            {
                "type": "response.output_item.added",
                "response_id": rid,
                "output_index": 0,
                "item": {"id": item, "type": "message", "role": "assistant", "content": []},
            }
        )
        self.sent_ms[item] = 0
        status, reason = "completed", None
        try:
            await asyncio.sleep(0.15)  # "thinking"
            n = int(self.reply_seconds * 10)
            t = np.arange(RATE // 10) / RATE
            for i in range(n):
                tone = 0.3 * np.sin(2 * np.pi * (220 + 20 * (i % 5)) * t)
                pcm = (tone * 32767).astype("<i2").tobytes()
                await self.send(
                    {
                        "type": "response.output_audio.delta",
                        **base,
                        "delta": base64.b64encode(pcm).decode(),
                    }
                )
                self.sent_ms[item] += 100
                if i % 5 == 0:
                    await self.send(
                        {
                            "type": "response.output_audio_transcript.delta",
                            **base,
                            "delta": f"word{i // 5} ",
                        }
                    )
                await asyncio.sleep(0.1 / self.pace)
        except asyncio.CancelledError:
            status, reason = "cancelled", "turn_detected"
        with contextlib.suppress(Exception):
            await self.send(
                {
                    "type": "response.done",
                    "response": {
                        "id": rid,
                        "status": status,
                        "status_details": {"type": status, "reason": reason} if reason else None,
                    },
                }
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reply-seconds", type=float, default=3.0)
    parser.add_argument("--pace", type=float, default=2.0, help="audio sent X times real time")
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.reply_seconds, args.pace),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
