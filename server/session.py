"""One realtime session: a receive task and a send task in a TaskGroup sharing a queue of events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from engine.prompt import build_prompt
from engine.types import SamplingParams
from server import conversation as conv
from server.audio_codecs import AudioPayloadError, b64decode_audio
from server.logs import session_id_var
from server.protocol import (
    OPENAI_VOICES,
    ConversationItemCreateEvent,
    ConversationItemDeleteEvent,
    ConversationItemRetrieveEvent,
    ConversationItemTruncateEvent,
    Dialect,
    InputAudioBufferAppendEvent,
    InputAudioBufferClearEvent,
    InputAudioBufferCommitEvent,
    MessageItem,
    OutputAudioBufferClearEvent,
    ProtocolError,
    ResponseCancelEvent,
    ResponseCreateEvent,
    SessionConfig,
    SessionUpdateEvent,
    encode_server_event,
    errors,
    parse_client_event,
)
from server.protocol import server_events as ev
from server.protocol.ids import new_item_id, new_response_id
from server.protocol.items import ContentPart
from server.resample import StreamingResampler
from server.response import ResponseDeps, ResponsePlan, ResponseRunner
from server.settings import Settings
from server.state import InvalidTransition, TurnEvent, TurnStateMachine
from server.tools import run_server_tool, server_tools, to_model_schema
from server.transcription import transcribe
from server.vad import IdleTimeout, SpeechStarted, SpeechStopped, TurnDetector

# The receive task parses client events and runs their handlers (VAD inline: it is cheap); model
# work happens in the response task (server/response.py) and in transcription tasks. Everything
# a session sends goes through one queue, so events keep their order.
log = logging.getLogger("server.session")

VAD_RATE = 16_000
MIN_COMMIT_MS = 100  # OpenAI refuses to commit less than 100 ms of audio
CLOSE_GOING_AWAY = 1001
CLOSE_NORMAL = 1000


class SessionClosed(Exception):
    """The websocket is gone (or being closed): ends the session's TaskGroup."""


@dataclass
class _Outgoing:
    event: ev.ServerEvent | None  # None: close the socket after what is queued
    response_id: str | None = None  # set on deltas: dropped once that response is cancelled
    on_sent: Callable[[], None] | None = None
    close_code: int = CLOSE_NORMAL
    close_reason: str = ""


@dataclass
class _Active:
    runner: ResponseRunner
    task: asyncio.Task


class RealtimeSession:
    """One websocket conversation with Step-Audio 2."""

    def __init__(self, websocket: WebSocket, gateway: Any, dialect: Dialect, session_id: str):
        self.ws = websocket
        self.gateway = gateway
        self.settings: Settings = gateway.settings
        self.metrics = gateway.metrics
        services = gateway.services
        self.deps = ResponseDeps(services.engine, services.token2wav, services.tokenizer,
                                 services.special, gateway.metrics)
        self.dialect = dialect
        self.id = session_id
        self.config = SessionConfig(
            model=self.settings.model_name,
            instructions=self.settings.instructions,
            voice=self.settings.default_voice or services.token2wav.default_voice,
        )
        self.conversation = conv.Conversation()
        self.turns = TurnStateMachine()
        self._server_tools = server_tools(self.settings.server_tools)
        self._out: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self._cancelled: set[str] = set()
        self._active: _Active | None = None
        self._pending_response = False  # a turn ended while a response was running
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        self.closed = asyncio.Event()  # set once the session has fully ended
        # Input audio: wire rate -> 16 kHz, then the turn detector (server VAD) or the buffer.
        self._resampler = StreamingResampler(self.config.input_format.sample_rate, VAD_RATE)
        self._buffer: list[np.ndarray] = []
        self._buffer_len = 0
        self._detector: TurnDetector | None = None
        self._speech_item_id: str | None = None
        self._configure_detector()

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the session until the client leaves or the server closes it."""
        session_id_var.set(self.id)
        self.metrics.open_sessions.inc()
        log.info("session opened", extra={"dialect": self.dialect.value})
        self.emit(ev.SessionCreated(session_id=self.id, session=self.config))
        if self.dialect is Dialect.BETA:
            self.emit(ev.ConversationCreated())
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._receive_loop())
                group.create_task(self._send_loop())
        except* SessionClosed:
            pass
        except* Exception as group_error:
            for exc in group_error.exceptions:
                log.error("session failed", exc_info=exc)
            with contextlib.suppress(Exception):
                await self.ws.close(code=1011, reason="internal error")
        finally:
            await self._stop_everything()
            self.metrics.open_sessions.dec()
            self.closed.set()
            log.info("session closed")

    async def shutdown(self, reason: str = "server shutting down") -> None:
        """Graceful close: cancel the response, flush queued events, close with 1001."""
        if self._closing:
            return
        await self._cancel_active("client_cancelled")
        self._closing = True
        self._out.put_nowait(_Outgoing(None, close_code=CLOSE_GOING_AWAY, close_reason=reason))

    async def _stop_everything(self) -> None:
        await self._cancel_active("client_cancelled")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout_s)

    # --- sending ----------------------------------------------------------------------------

    def emit(self, event: ev.ServerEvent, response_id: str | None = None,
             on_sent: Callable[[], None] | None = None) -> None:
        if isinstance(event, ev.ErrorEvent):
            self.metrics.errors.labels(code=event.error.code or "unknown").inc()
        self._out.put_nowait(_Outgoing(event, response_id, on_sent))

    def error(self, err: ProtocolError) -> None:
        log.info("client error", extra={"code": err.code, "error_message": err.message})
        self.emit(ev.ErrorEvent.of(err))

    async def _send_loop(self) -> None:
        while True:
            out = await self._out.get()
            if out.event is None:
                with contextlib.suppress(Exception):
                    await self.ws.close(code=out.close_code, reason=out.close_reason)
                raise SessionClosed
            if out.response_id is not None and out.response_id in self._cancelled:
                continue  # a delta of a response that was cancelled: never sent
            text = encode_server_event(out.event, self.dialect)
            if text is None:
                continue
            try:
                await self.ws.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                raise SessionClosed from exc
            if out.on_sent is not None:
                out.on_sent()

    # --- receiving --------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        idle = self.settings.session_idle_timeout_s or None
        while True:
            try:
                async with asyncio.timeout(idle):
                    message = await self.ws.receive()
            except TimeoutError:
                log.info("closing idle session")
                self._out.put_nowait(_Outgoing(None, close_code=CLOSE_NORMAL,
                                               close_reason="idle timeout"))
                return
            except (WebSocketDisconnect, RuntimeError) as exc:
                raise SessionClosed from exc
            if message["type"] == "websocket.disconnect":
                raise SessionClosed
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            if self._closing:
                continue
            event = parse_client_event(raw, self.settings.max_event_bytes)
            if isinstance(event, ProtocolError):
                self.error(event)
                continue
            try:
                await self._dispatch(event)
            except _Refusal as refusal:
                self.error(refusal.error.model_copy(update={"event_id": event.event_id}))
            except Exception:
                # A bug in one handler must not end the conversation: say so and go on.
                log.exception("handler failed", extra={"event_type": event.type})
                self.error(ProtocolError(code=errors.INTERNAL_ERROR, type=errors.SERVER_ERROR,
                                         message=f"The server failed to handle '{event.type}'.",
                                         event_id=event.event_id))

    async def _dispatch(self, event: Any) -> None:
        match event:
            case InputAudioBufferAppendEvent():
                self._on_append(event)
            case SessionUpdateEvent():
                self._on_session_update(event)
            case InputAudioBufferCommitEvent():
                self._on_commit()
            case InputAudioBufferClearEvent():
                self._on_clear()
            case OutputAudioBufferClearEvent():
                # WebRTC/SIP in OpenAI's API: "cut off the current audio response". Over a
                # websocket the client owns playback, so what is left to stop is the response;
                # an error here would look fatal to clients that send it on every interruption.
                if self._active is not None and self._active.runner.id not in self._cancelled:
                    await self._cancel_and_wait(self._active, "client_cancelled")
            case ConversationItemCreateEvent():
                self._on_item_create(event)
            case ConversationItemRetrieveEvent():
                self._on_item_retrieve(event)
            case ConversationItemTruncateEvent():
                await self._on_item_truncate(event)
            case ConversationItemDeleteEvent():
                await self._on_item_delete(event)
            case ResponseCreateEvent():
                self._on_response_create(event)
            case ResponseCancelEvent():
                await self._on_response_cancel(event)

    # --- session.update ---------------------------------------------------------------------

    def _on_session_update(self, event: SessionUpdateEvent) -> None:
        update = event.session
        voice = update.voice_given
        mapped = None
        if voice is not None:
            mapped = self._resolve_voice(voice)
        new = self.config.apply(update)
        if mapped is not None:
            new = new.model_copy(update={"voice": mapped})
        format_changed = new.input_format != self.config.input_format
        self.config = new
        if format_changed:
            self._resampler = StreamingResampler(new.input_format.sample_rate, VAD_RATE)
        self._configure_detector()
        self.emit(ev.SessionUpdated(session_id=self.id, session=self.config))

    def _resolve_voice(self, voice: str) -> str:
        """A registered voice name; OpenAI's names map to the default; else `unknown_voice`."""
        token2wav = self.deps.token2wav
        if voice in token2wav.voice_names():
            return voice
        if voice in OPENAI_VOICES:
            default = self.settings.default_voice or token2wav.default_voice
            log.info("OpenAI voice mapped to the default voice",
                     extra={"voice": voice, "default_voice": default})
            return default
        raise _Refusal(errors.UNKNOWN_VOICE,
                       f"Unknown voice '{voice}'. Registered voices: "
                       f"{', '.join(token2wav.voice_names())} (GET /v1/voices).", "session.voice")

    def _configure_detector(self) -> None:
        td = self.config.turn_detection
        if td is None:
            self._detector = None
            return
        params = td.effective()
        if self._detector is None:
            self._detector = TurnDetector(self.gateway.vad, params)
        else:
            self._detector.set_params(params)

    # --- input audio ------------------------------------------------------------------------

    def _on_append(self, event: InputAudioBufferAppendEvent) -> None:
        try:
            samples = b64decode_audio(event.audio, self.config.input_format)
        except AudioPayloadError as exc:
            raise _Refusal(exc.code, str(exc), "audio") from None
        audio16 = self._resampler.process(samples)
        limit = int(self.settings.max_input_buffer_s * VAD_RATE)
        if self._detector is None and self._buffer_len + audio16.size > limit:
            raise _Refusal(errors.BUFFER_TOO_LARGE,
                           f"The input audio buffer would exceed "
                           f"{self.settings.max_input_buffer_s:g} s; this chunk was not added. "
                           "Commit or clear the buffer.", "audio")
        self._buffer.append(audio16)
        self._buffer_len += audio16.size
        if self._detector is None:
            return
        if self._buffer_len > limit:  # between turns only recent audio matters
            self._take_buffer()
        for turn_event in self._detector.feed(audio16):
            match turn_event:
                case SpeechStarted(audio_start_ms=start_ms):
                    self._on_speech_started(start_ms)
                case SpeechStopped():
                    self._on_speech_stopped(turn_event)
                case IdleTimeout(audio_start_ms=start_ms, audio_end_ms=end_ms):
                    self._on_idle_timeout(start_ms, end_ms)

    def _take_buffer(self) -> np.ndarray:
        audio = (np.concatenate(self._buffer) if self._buffer
                 else np.zeros(0, dtype=np.float32))
        self._buffer, self._buffer_len = [], 0
        return audio

    def _turn(self, event: TurnEvent) -> None:
        try:
            self.turns.apply(event)
        except InvalidTransition as exc:
            log.warning("unexpected turn transition", extra={"detail": str(exc)})

    def _on_speech_started(self, start_ms: int) -> None:
        self._speech_item_id = new_item_id()
        self.emit(ev.InputAudioBufferSpeechStarted(audio_start_ms=start_ms,
                                                   item_id=self._speech_item_id))
        td = self.config.turn_detection
        active = self._active
        if (active is not None and td is not None and td.interrupt_response
                and active.runner.id not in self._cancelled):
            self._barge_in(active)
        self._turn(TurnEvent.SPEECH_STARTED)

    def _barge_in(self, active: _Active) -> None:
        """User speech over a response: cancel it now; truncate once it has ended."""
        self.metrics.barge_ins.inc()
        self._turn(TurnEvent.BARGE_IN)
        self._cancel(active, "turn_detected")
        active.task.add_done_callback(lambda _t: self._server_truncate(active.runner))

    def _server_truncate(self, runner: ResponseRunner) -> None:
        """Keep only what the user can have heard: min(audio sent, time since its first delta)."""
        message = runner.outcome.message
        if message is None or message.modality != "audio" or message.id not in self.conversation:
            return
        if message.truncated_ms is not None:
            return  # the client already said where it stopped playing
        first = runner.outcome.first_audio_at
        played = 0 if first is None else int((time.monotonic() - first) * 1000)
        heard = min(message.sent_ms, played)
        message.truncate(heard)
        self.emit(ev.ConversationItemTruncated(item_id=message.id, content_index=0,
                                               audio_end_ms=heard))

    def _on_speech_stopped(self, stopped: SpeechStopped) -> None:
        item_id = self._speech_item_id or new_item_id()
        self._speech_item_id = None
        self.emit(ev.InputAudioBufferSpeechStopped(audio_end_ms=stopped.audio_end_ms,
                                                   item_id=item_id))
        self._turn(TurnEvent.SPEECH_STOPPED)
        self._take_buffer()
        self._commit_audio(stopped.samples, item_id)
        td = self.config.turn_detection
        if td is not None and td.create_response:
            self._auto_respond()

    def _on_idle_timeout(self, start_ms: int, end_ms: int) -> None:
        if self._active is not None:
            return
        item_id = new_item_id()
        self.emit(ev.InputAudioBufferTimeoutTriggered(audio_start_ms=start_ms,
                                                      audio_end_ms=end_ms, item_id=item_id))
        audio = self._take_buffer()
        if audio.size >= MIN_COMMIT_MS * VAD_RATE // 1000:
            self._commit_audio(audio, item_id)
        self._auto_respond()

    def _auto_respond(self) -> None:
        if self._active is not None:
            self._pending_response = True
            return
        self._start_response(ResponseCreateEvent(type="response.create"))

    def _on_commit(self) -> None:
        if self._detector is not None and self._detector.speaking:
            stopped = self._detector.force_stop()
            if stopped is not None:
                self._take_buffer()
                item_id = self._speech_item_id or new_item_id()
                self._speech_item_id = None
                self.emit(ev.InputAudioBufferSpeechStopped(audio_end_ms=stopped.audio_end_ms,
                                                           item_id=item_id))
                self._commit_audio(stopped.samples, item_id)
                return
        if self._detector is None:
            # Manual mode: the resampler's look-ahead tail belongs to this commit.
            self._buffer.append(self._resampler.flush())
            self._resampler.reset()
        audio = self._take_buffer()
        if audio.size < MIN_COMMIT_MS * VAD_RATE // 1000:
            raise _Refusal(errors.INPUT_AUDIO_BUFFER_COMMIT_EMPTY,
                           f"Error committing input audio buffer: buffer too small. Expected at "
                           f"least {MIN_COMMIT_MS}ms of audio, but buffer only has "
                           f"{audio.size * 1000 // VAD_RATE}ms of audio.")
        if self._detector is not None:
            self._detector.clear()
        self._commit_audio(audio, new_item_id())

    def _commit_audio(self, audio16: np.ndarray, item_id: str) -> None:
        previous = self.conversation.last_id()
        item = conv.UserMessage(id=item_id, parts=[conv.UserAudio(audio16)])
        self.conversation.add(item)
        self._turn(TurnEvent.COMMITTED)
        self.emit(ev.InputAudioBufferCommitted(previous_item_id=previous, item_id=item_id))
        wire = MessageItem(id=item_id, role="user",
                           content=[ContentPart(type="input_audio", transcript=None)])
        self.emit(ev.ConversationItemAdded(previous_item_id=previous, item=wire))
        self.emit(ev.ConversationItemDone(previous_item_id=previous, item=wire))
        if self.config.input_transcription is not None:
            self._spawn(self._transcribe(item_id, audio16))

    def _on_clear(self) -> None:
        self._take_buffer()
        self._resampler.reset()
        if self._detector is not None:
            self._detector.clear()
        self._speech_item_id = None
        self._turn(TurnEvent.CLEARED)
        self.emit(ev.InputAudioBufferCleared())

    # --- transcription ----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _transcribe(self, item_id: str, audio16: np.ndarray) -> None:
        try:
            text = await transcribe(self.deps, audio16, self.settings,
                                    request_id=f"asr_{item_id}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("transcription failed", extra={"item_id": item_id, "error": str(exc)})
            self.emit(ev.InputAudioTranscriptionFailed(
                item_id=item_id,
                error=ev.StatusError(type="server_error", code=errors.ENGINE_ERROR,
                                     message=str(exc))))
            return
        item = self.conversation.find(item_id)  # may have been deleted meanwhile
        if isinstance(item, conv.UserMessage):
            for part in item.parts:
                if isinstance(part, conv.UserAudio):
                    part.transcript = text
        self.emit(ev.InputAudioTranscriptionCompleted(
            item_id=item_id, transcript=text,
            usage=ev.TranscriptionUsage(seconds=round(audio16.size / VAD_RATE, 3))))

    # --- conversation items -----------------------------------------------------------------

    def _on_item_create(self, event: ConversationItemCreateEvent) -> None:
        wire = event.item
        item_id = wire.id or new_item_id()
        if item_id in self.conversation:
            raise _Refusal(errors.INVALID_ITEM, f"Item '{item_id}' already exists.", "item.id")
        previous = event.previous_item_id
        if previous is not None and previous != "root" and previous not in self.conversation:
            raise _Refusal(errors.PREVIOUS_ITEM_NOT_FOUND,
                           f"Previous item '{previous}' does not exist.", "previous_item_id")
        item = self._from_wire(wire, item_id)
        self.conversation.add(item, previous)
        previous_id = self.conversation.previous_id(item_id)
        rendered = conv.to_wire(item)
        self.emit(ev.ConversationItemAdded(previous_item_id=previous_id, item=rendered))
        self.emit(ev.ConversationItemDone(previous_item_id=previous_id, item=rendered))
        if isinstance(item, conv.UserMessage) and self.config.input_transcription is not None:
            for part in item.parts:
                if isinstance(part, conv.UserAudio) and part.transcript is None:
                    self._spawn(self._transcribe(item_id, part.samples))

    def _from_wire(self, wire: Any, item_id: str) -> conv.Item:
        try:
            return conv.from_wire(wire, item_id, self.config.input_format)
        except conv.ItemError as exc:
            raise _Refusal(exc.code, str(exc), exc.param) from None

    def _on_item_retrieve(self, event: ConversationItemRetrieveEvent) -> None:
        if event.item_id not in self.conversation:
            raise _Refusal(errors.ITEM_RETRIEVE_INVALID_ITEM_ID,
                           f"Item with item_id not found: {event.item_id}", "item_id")
        item = self.conversation.get(event.item_id)
        self.emit(ev.ConversationItemRetrieved(item=conv.to_wire(item, with_audio=True)))

    async def _on_item_truncate(self, event: ConversationItemTruncateEvent) -> None:
        if event.item_id not in self.conversation:
            active = self._active
            if active is not None and active.runner.outcome.message is not None \
                    and active.runner.outcome.message.id == event.item_id:
                # The item of the running reply: the client stopped playing it.
                await self._cancel_and_wait(active, "client_cancelled")
            if event.item_id not in self.conversation:
                raise _Refusal(errors.ITEM_TRUNCATE_INVALID_ITEM_ID,
                               f"Item with item_id not found: {event.item_id}", "item_id")
        item = self.conversation.get(event.item_id)
        if not isinstance(item, conv.AssistantMessage) or item.modality != "audio":
            raise _Refusal(errors.ITEM_TRUNCATE_INVALID_ITEM_ID,
                           "Only assistant messages with audio can be truncated.", "item_id")
        if event.content_index != 0:
            raise _Refusal(errors.ITEM_TRUNCATE_INVALID_CONTENT_INDEX,
                           "Content index out of range: the item has one audio part.",
                           "content_index")
        try:
            item.truncate(event.audio_end_ms)
        except ValueError as exc:
            raise _Refusal(errors.ITEM_TRUNCATE_INVALID_AUDIO_END_MS, str(exc),
                           "audio_end_ms") from None
        self.emit(ev.ConversationItemTruncated(item_id=item.id, content_index=0,
                                               audio_end_ms=event.audio_end_ms))

    async def _on_item_delete(self, event: ConversationItemDeleteEvent) -> None:
        active = self._active
        if (active is not None and active.runner.outcome.message is not None
                and active.runner.outcome.message.id == event.item_id):
            await self._cancel_and_wait(active, "client_cancelled")
        if event.item_id not in self.conversation:
            raise _Refusal(errors.ITEM_DELETE_INVALID_ITEM_ID,
                           f"Item with item_id not found: {event.item_id}", "item_id")
        self.conversation.delete(event.item_id)
        self.emit(ev.ConversationItemDeleted(item_id=event.item_id))

    # --- responses --------------------------------------------------------------------------

    def _on_response_create(self, event: ResponseCreateEvent) -> None:
        active = self._active
        if active is not None:
            raise _Refusal(errors.CONVERSATION_ALREADY_HAS_ACTIVE_RESPONSE,
                           f"Conversation already has an active response in progress: "
                           f"{active.runner.id}. Wait until the response is finished before "
                           "creating a new one.")
        self._start_response(event)

    async def _on_response_cancel(self, event: ResponseCancelEvent) -> None:
        active = self._active
        wanted = event.response_id
        if (active is None or active.runner.id in self._cancelled
                or (wanted is not None and wanted != active.runner.id)):
            raise _Refusal(errors.RESPONSE_CANCEL_NOT_ACTIVE, errors.CANCEL_NOT_ACTIVE_MESSAGE)
        await self._cancel_and_wait(active, "client_cancelled")

    def _cancel(self, active: _Active, reason: str) -> None:
        self._cancelled.add(active.runner.id)
        active.runner.cancel_reason = reason
        active.task.cancel()

    async def _cancel_and_wait(self, active: _Active, reason: str) -> None:
        if active.runner.id not in self._cancelled:
            self._cancel(active, reason)
        await asyncio.wait([active.task], timeout=self.settings.shutdown_timeout_s)

    async def _cancel_active(self, reason: str) -> None:
        if self._active is not None:
            await self._cancel_and_wait(self._active, reason)

    def _resolve_response_voice(self, voice: str | None) -> str:
        return self.config.voice if voice is None else self._resolve_voice(voice)

    def _start_response(self, event: ResponseCreateEvent) -> None:
        params = event.response
        cfg = self.config
        modalities = list(params.output_modalities or cfg.output_modalities)
        speech = "audio" in modalities
        voice = self._resolve_response_voice(params.voice)
        output_format = params.output_format or cfg.output_format
        tools = params.tools if params.tools is not None else cfg.tools
        choice = params.tool_choice if params.tool_choice is not None else cfg.tool_choice
        schemas = [] if choice == "none" else [to_model_schema(t) for t in tools]
        schemas += [tool.schema for tool in self._server_tools.values()]
        limit = params.max_output_tokens or cfg.max_output_tokens
        max_tokens = self.settings.max_output_tokens if limit == "inf" else int(limit)
        temperature = params.temperature if params.temperature is not None else cfg.temperature
        sampling = SamplingParams(
            temperature=self.settings.temperature if temperature is None else temperature,
            top_p=cfg.x_stepaudio2.top_p or self.settings.top_p,
            repetition_penalty=cfg.x_stepaudio2.repetition_penalty
            or self.settings.repetition_penalty,
            max_tokens=max_tokens,
        )
        instructions = params.instructions if params.instructions is not None \
            else cfg.instructions
        in_conversation = not params.out_of_band
        if params.input is not None:
            items = [self._from_wire(i, i.id or new_item_id()) for i in params.input]
        else:
            items = list(self.conversation)
        try:
            prompt = build_prompt(conv.to_messages(instructions, items, self.conversation,
                                                  self.settings.max_prompt_tokens),
                                  tools=schemas or None,
                                  speech=speech)
        except (ValueError, TypeError) as exc:
            # E.g. a client function_call item whose arguments are not a JSON object.
            self.error(ProtocolError(code=errors.INVALID_ITEM,
                                     message=f"Cannot build the prompt: {exc}"))
            return
        response = ev.Response(
            id=new_response_id(), output_modalities=modalities,
            conversation_id=None if not in_conversation else f"conv_{self.id[5:]}",
            max_output_tokens=limit, voice=voice, output_format=output_format,
            temperature=temperature, metadata=params.metadata,
        )
        plan = ResponsePlan(
            response=response, prompt=prompt, sampling=sampling, speech=speech, voice=voice,
            output_format=output_format,
            tool_names=frozenset(t.name for t in tools) | frozenset(self._server_tools),
            previous_item_id=self.conversation.last_id(), in_conversation=in_conversation,
            audio_delta_ms=self.settings.audio_delta_ms,
        )
        runner = ResponseRunner(plan, self.deps, self.emit, on_finished=self._response_ended)
        task = asyncio.create_task(runner.run())
        # Also when the task is cancelled before it ever ran (speech stopped and started again
        # within one append): then the runner could not report its end itself.
        task.add_done_callback(lambda _task: self._response_ended(runner))
        self._active = _Active(runner, task)
        self._pending_response = False
        self._turn(TurnEvent.RESPONSE_STARTED)

    def _response_ended(self, runner: ResponseRunner) -> None:
        """The response sent its `response.done` (or never started): settle the conversation.

        Called once per runner, as its closing events are queued, so that a `response.create`
        answering `response.done` never meets a stale active response."""
        if runner.settled:
            return
        runner.settled = True
        outcome = runner.outcome
        if self._active is not None and self._active.runner is runner:
            self._active = None
        plan = runner.plan
        follow_up = False
        if plan.in_conversation:
            # Output goes right after the item the response answered (as announced), even if
            # the user added items meanwhile; at the end if that item was deleted.
            anchor = plan.previous_item_id or "root"
            if anchor != "root" and anchor not in self.conversation:
                anchor = None

            def place(item: conv.Item) -> str | None:
                nonlocal anchor
                previous = self.conversation.last_id() if anchor is None else anchor
                self.conversation.add(item, anchor)
                anchor = item.id
                return None if previous == "root" else previous

            message = outcome.message
            if message is not None:
                place(message)
            for call in outcome.calls:
                call.message_id = message.id if message is not None else None
                place(call)
                tool = self._server_tools.get(call.name)
                if tool is not None:
                    output = conv.FunctionCallOutput(id=new_item_id(), call_id=call.call_id,
                                                     output=run_server_tool(tool, call.arguments))
                    previous = place(output)
                    rendered = conv.to_wire(output)
                    self.emit(ev.ConversationItemAdded(previous_item_id=previous, item=rendered))
                    self.emit(ev.ConversationItemDone(previous_item_id=previous, item=rendered))
                    follow_up = True
        self._turn(TurnEvent.RESPONSE_FINISHED)
        if self._detector is not None:
            self._detector.restart_idle()
        if self._closing:
            return
        # A user turn that ended meanwhile gets its reply even when this one was cancelled.
        if self._pending_response or follow_up:
            self._start_response(ResponseCreateEvent(type="response.create"))


class _Refusal(Exception):
    """A client event the session refuses: becomes an `error` event, the session goes on."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.error = ProtocolError(code=code, message=message, param=param)
