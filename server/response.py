"""One response = one task: engine deltas -> parser -> transcript and token2wav audio deltas."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.parser import AudioCodes, EndOfTurn, OutputParser, TextDelta, ToolCall, ToolCallError
from engine.types import Engine, EngineError, EngineRequest, PromptSegment, SamplingParams
from server.audio_codecs import encode_audio, float_to_pcm16
from server.conversation import OUTPUT_RATE, AssistantMessage, FunctionCall
from server.metrics import Metrics
from server.protocol import errors
from server.protocol import server_events as ev
from server.protocol.errors import ProtocolError
from server.protocol.formats import AudioFormat
from server.protocol.ids import new_item_id
from server.protocol.items import ContentPart, FunctionCallItem, MessageItem
from server.resample import StreamingResampler
from tokenizer_audio.types import Token2wavService, Token2wavStream, VoiceError

# The task's `finally` aborts the engine request and cancels the token2wav stream, whatever ended
# it (completion, barge-in, `response.cancel`, an error, a closed socket). Events go out through
# `emit(event, response_id)`; deltas are tagged with the response id so that the session's send
# loop drops them once the response is cancelled, while the closing events are not.
log = logging.getLogger("server.response")

# emit(event, response_id or None, on_sent callback or None); response_id marks a droppable delta.
Emit = Callable[[ev.ServerEvent, str | None, Callable[[], None] | None], None]


@dataclass
class ResponsePlan:
    """Everything one response needs, fixed when it is created."""

    response: ev.Response  # id, modalities, voice, format, metadata, conversation id
    prompt: tuple[PromptSegment, ...]
    sampling: SamplingParams
    speech: bool
    voice: str
    output_format: AudioFormat
    tool_names: frozenset[str]
    previous_item_id: str | None
    in_conversation: bool  # False for `conversation: "none"` (out of band)
    audio_delta_ms: int = 100


@dataclass
class ResponseDeps:
    engine: Engine
    token2wav: Token2wavService
    tokenizer: Any
    special: Any
    metrics: Metrics


@dataclass
class ResponseOutcome:
    """What the session needs once the task has ended."""

    status: str = "in_progress"
    reason: str | None = None
    message: AssistantMessage | None = None
    calls: list[FunctionCall] = field(default_factory=list)
    first_audio_at: float | None = None  # monotonic time of the first audio delta sent
    error: str | None = None


def _usage(parser: OutputParser, prompt_tokens: int) -> ev.Usage:
    output = len(parser.generated_ids) + (1 if parser.stop_id is not None else 0)
    return ev.Usage(
        input_tokens=prompt_tokens,
        output_tokens=output,
        total_tokens=prompt_tokens + output,
        # audio_tokens counts speech codes (960 output samples each), not pads.
        output_token_details=ev.OutputTokenDetails(
            text_tokens=parser.n_text_tokens, audio_tokens=parser.n_audio_codes
        ),
    )


class ResponseRunner:
    """Runs one response; `run()` is the task body, `cancel_reason` is set before cancelling."""

    def __init__(self, plan: ResponsePlan, deps: ResponseDeps, emit: Emit,
                 on_finished: Callable[[ResponseRunner], None] | None = None) -> None:
        self.plan = plan
        self._on_finished = on_finished
        self.settled = False  # set by the session once it has taken the outcome
        self.deps = deps
        self._emit = emit
        self.id = plan.response.id
        self.cancel_reason: str = "client_cancelled"
        self.outcome = ResponseOutcome()
        self.started_at = time.monotonic()
        self._parser = OutputParser(deps.tokenizer, deps.special, tool_names=plan.tool_names)
        self._stream: Token2wavStream | None = None
        self._message: AssistantMessage | None = None
        self._message_index = 0
        self._pcm_pending = np.zeros(0, dtype=np.float32)
        self._resampler = (
            None if plan.output_format is AudioFormat.PCM16
            else StreamingResampler(OUTPUT_RATE, plan.output_format.sample_rate)
        )
        self._prompt_tokens = 0
        self._engine_done = False
        self._output_items: list[Any] = []

    # --- the task ---------------------------------------------------------------------------

    async def run(self) -> ResponseOutcome:
        self._emit(ev.ResponseCreated(response=self.plan.response), None, None)
        status, reason, error = "completed", None, None
        try:
            finish = await self._generate()
            if finish == "length":
                status, reason = "incomplete", "max_output_tokens"
        except asyncio.CancelledError:
            status, reason = "cancelled", self.cancel_reason
            self._finish(status, reason, None)
            raise
        except (EngineError, VoiceError) as exc:
            status, error = "failed", str(exc)
            log.warning("response failed", extra={"response_id": self.id, "error": error})
        except Exception as exc:  # a bug must end this response, not the session
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("response crashed", extra={"response_id": self.id})
        finally:
            await self._release()
        self._finish(status, reason, error)
        return self.outcome

    async def _generate(self) -> str:
        plan, deps = self.plan, self.deps
        request = EngineRequest(request_id=self.id, prompt=plan.prompt, sampling=plan.sampling)
        deps.metrics.engine_in_flight.inc()
        finish = "stop"
        try:
            async for delta in deps.engine.generate(request):
                if delta.prompt_tokens is not None:
                    self._prompt_tokens = delta.prompt_tokens
                await self._handle(self._parser.feed(delta.token_ids))
                if delta.finish_reason is not None:
                    finish = delta.finish_reason
                    break
            if finish == "error":
                raise EngineError("the engine reported an error for this request")
            self._engine_done = True
        finally:
            deps.metrics.engine_in_flight.dec()
        await self._handle(self._parser.finish(finish))
        if self._stream is not None:
            tail = await self._stream.finish()
            self._stream = None
            self._queue_audio(tail, final=True)
        else:
            self._queue_audio(np.zeros(0, dtype=np.float32), final=True)
        return finish

    async def _release(self) -> None:
        """Free the engine request and the token2wav stream, whatever happened."""
        if not self._engine_done:
            try:
                await self.deps.engine.abort(self.id)
            except Exception:  # the engine may be the thing that failed
                log.warning("engine abort failed", exc_info=True)
        if self._stream is not None:
            stream, self._stream = self._stream, None
            try:
                await stream.cancel()
            except Exception:
                log.warning("token2wav cancel failed", exc_info=True)

    # --- parser events ----------------------------------------------------------------------

    async def _handle(self, events: list[Any]) -> None:
        for event in events:
            match event:
                case TextDelta(text=text) if text:
                    self._open_message()
                    assert self._message is not None
                    self._message.full_text += text
                    self._emit_text_delta(text)
                case AudioCodes(codes=codes) if self.plan.speech:
                    self._open_message()
                    assert self._message is not None
                    self._message.full_audio_codes += len(codes)
                    if self._stream is None:
                        self._stream = await self.deps.token2wav.open_stream(self.plan.voice)
                    self._queue_audio(await self._stream.feed(codes))
                case ToolCall(call_id=call_id, name=name, arguments=arguments):
                    self.outcome.calls.append(
                        FunctionCall(id=new_item_id(), call_id=call_id, name=name,
                                     arguments=arguments)
                    )
                case ToolCallError(message=message):
                    log.info("model wrote an unusable tool call",
                             extra={"response_id": self.id, "reason": message})
                case EndOfTurn() | TextDelta() | AudioCodes():
                    pass

    def _part_type(self) -> str:
        return "output_audio" if self.plan.speech else "output_text"

    def _open_message(self) -> None:
        if self._message is not None:
            return
        plan = self.plan
        special = self.deps.special
        self._message = AssistantMessage(
            id=new_item_id(),
            modality="audio" if plan.speech else "text",
            is_audio=special.is_audio,
            tail_ids=(special.tts_end,),
        )
        self.outcome.message = self._message
        self._message_index = len(self._output_items)
        self._output_items.append(self._message)
        item = self._wire_message("in_progress", empty=True)
        rid = self.id
        self._emit(ev.ResponseOutputItemAdded(response_id=rid, output_index=self._message_index,
                                              item=item), None, None)
        if plan.in_conversation:
            self._emit(ev.ConversationItemAdded(previous_item_id=plan.previous_item_id,
                                                item=item), None, None)
        part = ContentPart(type=self._part_type(), **({"transcript": ""} if plan.speech
                                                     else {"text": ""}))
        self._emit(ev.ResponseContentPartAdded(response_id=rid, item_id=self._message.id,
                                               output_index=self._message_index,
                                               content_index=0, part=part), None, None)

    def _wire_message(self, status: str, *, empty: bool = False) -> MessageItem:
        message = self._message
        assert message is not None
        content = []
        if not empty:
            if self.plan.speech:
                content = [ContentPart(type="output_audio", transcript=message.text)]
            else:
                content = [ContentPart(type="output_text", text=message.text)]
        return MessageItem(id=message.id, role="assistant", status=status, content=content)

    def _part_kwargs(self) -> dict[str, Any]:
        assert self._message is not None
        return {"response_id": self.id, "item_id": self._message.id,
                "output_index": self._message_index, "content_index": 0}

    def _emit_text_delta(self, text: str) -> None:
        kwargs = self._part_kwargs()
        if self.plan.speech:
            event: ev.ServerEvent = ev.ResponseOutputAudioTranscriptDelta(delta=text, **kwargs)
        else:
            event = ev.ResponseOutputTextDelta(delta=text, **kwargs)
        self._emit(event, self.id, None)

    # --- audio out --------------------------------------------------------------------------

    def _queue_audio(self, pcm: np.ndarray, *, final: bool = False) -> None:
        """Cut synthesized 24 kHz audio into deltas of `audio_delta_ms`; `final` flushes."""
        if self._message is None or not self.plan.speech:
            return
        if pcm.size:
            self._pcm_pending = np.concatenate([self._pcm_pending, pcm.astype(np.float32)])
        step = OUTPUT_RATE * self.plan.audio_delta_ms // 1000
        while self._pcm_pending.size >= step or (final and self._pcm_pending.size):
            chunk, self._pcm_pending = self._pcm_pending[:step], self._pcm_pending[step:]
            self._emit_audio(chunk)
        if final and self._resampler is not None:
            # The 24 -> 8 kHz filter's look-ahead tail: without it G.711 audio would be short.
            tail = self._resampler.flush()
            if tail.size:
                wire = encode_audio(tail, self.plan.output_format)
                self._emit(ev.ResponseOutputAudioDelta(
                    delta=base64.b64encode(wire).decode("ascii"), **self._part_kwargs()),
                    self.id, None)

    def _emit_audio(self, chunk: np.ndarray) -> None:
        fmt = self.plan.output_format
        if self._resampler is None:
            wire = float_to_pcm16(chunk)
        else:
            wire = encode_audio(self._resampler.process(chunk), fmt)
        pcm16 = float_to_pcm16(chunk)
        event = ev.ResponseOutputAudioDelta(delta=base64.b64encode(wire).decode("ascii"),
                                            **self._part_kwargs())
        message = self._message
        assert message is not None

        def sent() -> None:
            # Only audio that really left counts as heard (barge-in truncation relies on it).
            if self.outcome.first_audio_at is None:
                self.outcome.first_audio_at = time.monotonic()
                self.deps.metrics.time_to_first_audio.observe(
                    self.outcome.first_audio_at - self.started_at
                )
            message.audio_pcm16.extend(pcm16)

        self._emit(event, self.id, sent)

    # --- the end ----------------------------------------------------------------------------

    def _finish(self, status: str, reason: str | None, error: str | None) -> None:
        """The closing events, in OpenAI's order; never dropped."""
        if self.outcome.status != "in_progress":
            return
        self.outcome.status, self.outcome.reason, self.outcome.error = status, reason, error
        rid = self.id
        item_status = "completed" if status == "completed" else "incomplete"
        wire_items: list[Any] = []
        message = self._message
        if message is not None:
            message.full_speech_ids = tuple(self._parser.generated_ids)
            message.status = item_status
            kwargs = self._part_kwargs()
            if self.plan.speech:
                self._emit(ev.ResponseOutputAudioDone(**kwargs), None, None)
                self._emit(ev.ResponseOutputAudioTranscriptDone(transcript=message.full_text,
                                                                **kwargs), None, None)
                part = ContentPart(type="output_audio", transcript=message.full_text)
            else:
                self._emit(ev.ResponseOutputTextDone(text=message.full_text, **kwargs),
                           None, None)
                part = ContentPart(type="output_text", text=message.full_text)
            self._emit(ev.ResponseContentPartDone(part=part, **kwargs), None, None)
            item = self._wire_message(item_status)
            wire_items.append(item)
            self._emit(ev.ResponseOutputItemDone(response_id=rid,
                                                 output_index=self._message_index,
                                                 item=item), None, None)
            if self.plan.in_conversation:
                self._emit(ev.ConversationItemDone(previous_item_id=self.plan.previous_item_id,
                                                   item=item), None, None)
        previous = message.id if message is not None else self.plan.previous_item_id
        if status in ("completed", "incomplete"):
            for call in self.outcome.calls:
                wire_items.append(self._emit_call(call, len(wire_items), previous))
                previous = call.id
        else:
            self.outcome.calls.clear()  # calls of a cancelled or failed reply are not made
        details = None
        if status != "completed":
            details = ev.StatusDetails(type=status, reason=reason)
            if error is not None:
                details.error = ev.StatusError(type="server_error", code=errors.ENGINE_ERROR,
                                               message=error)
        response = self.plan.response.model_copy(update={
            "status": status,
            "status_details": details,
            "output": wire_items,
            "usage": _usage(self._parser, self._prompt_tokens),
        })
        if error is not None:
            self._emit(ev.ErrorEvent.of(ProtocolError(
                code=errors.ENGINE_ERROR, type=errors.SERVER_ERROR,
                message=f"Response {rid} failed: {error}")), None, None)
        self._emit(ev.ResponseDone(response=response), None, None)
        self.deps.metrics.responses.labels(status=status).inc()
        if self._on_finished is not None:
            self._on_finished(self)

    def _emit_call(self, call: FunctionCall, index: int, previous: str | None) -> FunctionCallItem:
        rid = self.id
        base = {"response_id": rid, "item_id": call.id, "output_index": index,
                "call_id": call.call_id}
        added = FunctionCallItem(id=call.id, call_id=call.call_id, name=call.name,
                                 arguments="", status="in_progress")
        self._emit(ev.ResponseOutputItemAdded(response_id=rid, output_index=index, item=added),
                   None, None)
        if self.plan.in_conversation:
            self._emit(ev.ConversationItemAdded(previous_item_id=previous, item=added),
                       None, None)
        self._emit(ev.ResponseFunctionCallArgumentsDelta(delta=call.arguments, **base),
                   None, None)
        self._emit(ev.ResponseFunctionCallArgumentsDone(name=call.name,
                                                        arguments=call.arguments, **base),
                   None, None)
        done = added.model_copy(update={"arguments": call.arguments, "status": "completed"})
        self._emit(ev.ResponseOutputItemDone(response_id=rid, output_index=index, item=done),
                   None, None)
        if self.plan.in_conversation:
            self._emit(ev.ConversationItemDone(previous_item_id=previous, item=done), None, None)
        return done
