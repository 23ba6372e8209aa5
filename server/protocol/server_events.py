"""Server events of the realtime protocol, dialect-neutral (GA type names, canonical objects)."""

# `server.protocol.dialect.encode_server_event` turns one into the wire JSON of a connection's
# dialect (beta names, flat session shape). Every event gets a fresh unique `event_id`.

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.protocol.errors import ProtocolError
from server.protocol.formats import AudioFormat
from server.protocol.ids import new_conversation_id, new_event_id, new_response_id
from server.protocol.items import ContentPart, Item
from server.protocol.session_config import Modality, SessionConfig

ResponseStatus = Literal["in_progress", "completed", "cancelled", "incomplete", "failed"]
StatusReason = Literal["turn_detected", "client_cancelled", "max_output_tokens", "content_filter"]


class ServerEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(default_factory=new_event_id)


# --- objects carried by events ------------------------------------------------------------------


class StatusError(BaseModel):
    type: str
    code: str | None = None
    message: str | None = None


class StatusDetails(BaseModel):
    type: Literal["completed", "cancelled", "incomplete", "failed"]
    reason: StatusReason | None = None
    error: StatusError | None = None


class InputTokenDetails(BaseModel):
    text_tokens: int = 0
    audio_tokens: int = 0
    cached_tokens: int = 0


class OutputTokenDetails(BaseModel):
    text_tokens: int = 0
    audio_tokens: int = 0


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_token_details: InputTokenDetails = Field(default_factory=InputTokenDetails)
    output_token_details: OutputTokenDetails = Field(default_factory=OutputTokenDetails)


class Response(BaseModel):
    """A response object as `response.created` / `response.done` carry it."""

    id: str = Field(default_factory=new_response_id)
    object: Literal["realtime.response"] = "realtime.response"
    status: ResponseStatus = "in_progress"
    status_details: StatusDetails | None = None
    output: list[Item] = Field(default_factory=list)
    output_modalities: list[Modality] = Field(default_factory=lambda: ["audio"])
    conversation_id: str | None = None  # None for out-of-band responses
    max_output_tokens: int | Literal["inf"] = "inf"
    voice: str | None = None
    output_format: AudioFormat = AudioFormat.PCM16
    temperature: float | None = None
    usage: Usage | None = None
    metadata: dict[str, str] | None = None


class Conversation(BaseModel):
    id: str = Field(default_factory=new_conversation_id)
    object: Literal["realtime.conversation"] = "realtime.conversation"


class ErrorDetail(BaseModel):
    type: str
    code: str | None
    message: str
    param: str | None = None
    event_id: str | None = None


class TranscriptionUsage(BaseModel):
    """Usage of an input transcription; duration form (seconds of audio)."""

    type: Literal["duration"] = "duration"
    seconds: float


class RateLimit(BaseModel):
    name: Literal["requests", "tokens"]
    limit: int
    remaining: int
    reset_seconds: float


# --- session / conversation -------------------------------------------------------------------


class SessionCreated(ServerEvent):
    type: Literal["session.created"] = "session.created"
    session_id: str
    session: SessionConfig


class SessionUpdated(ServerEvent):
    type: Literal["session.updated"] = "session.updated"
    session_id: str
    session: SessionConfig


class ConversationCreated(ServerEvent):
    """Beta only (GA connections do not receive it)."""

    type: Literal["conversation.created"] = "conversation.created"
    conversation: Conversation = Field(default_factory=Conversation)


class ConversationItemAdded(ServerEvent):
    """GA `conversation.item.added`; beta `conversation.item.created`."""

    type: Literal["conversation.item.added"] = "conversation.item.added"
    previous_item_id: str | None = None
    item: Item


class ConversationItemDone(ServerEvent):
    """GA only: the item is final (beta connections do not receive it)."""

    type: Literal["conversation.item.done"] = "conversation.item.done"
    previous_item_id: str | None = None
    item: Item


class ConversationItemRetrieved(ServerEvent):
    type: Literal["conversation.item.retrieved"] = "conversation.item.retrieved"
    item: Item


class ConversationItemTruncated(ServerEvent):
    type: Literal["conversation.item.truncated"] = "conversation.item.truncated"
    item_id: str
    content_index: int
    audio_end_ms: int


class ConversationItemDeleted(ServerEvent):
    type: Literal["conversation.item.deleted"] = "conversation.item.deleted"
    item_id: str


class InputAudioTranscriptionDelta(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    item_id: str
    content_index: int = 0
    delta: str


class InputAudioTranscriptionCompleted(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    item_id: str
    content_index: int = 0
    transcript: str
    usage: TranscriptionUsage


class InputAudioTranscriptionFailed(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.failed"] = (
        "conversation.item.input_audio_transcription.failed"
    )
    item_id: str
    content_index: int = 0
    error: StatusError


# --- input audio buffer -------------------------------------------------------------------------


class InputAudioBufferSpeechStarted(ServerEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


class InputAudioBufferSpeechStopped(ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


class InputAudioBufferCommitted(ServerEvent):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    previous_item_id: str | None = None
    item_id: str


class InputAudioBufferCleared(ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class InputAudioBufferTimeoutTriggered(ServerEvent):
    """GA only (no beta equivalent: beta connections do not receive it)."""

    type: Literal["input_audio_buffer.timeout_triggered"] = "input_audio_buffer.timeout_triggered"
    audio_start_ms: int
    audio_end_ms: int
    item_id: str


# --- responses ----------------------------------------------------------------------------------


class ResponseCreated(ServerEvent):
    type: Literal["response.created"] = "response.created"
    response: Response


class ResponseDone(ServerEvent):
    type: Literal["response.done"] = "response.done"
    response: Response


class ResponseOutputItemAdded(ServerEvent):
    type: Literal["response.output_item.added"] = "response.output_item.added"
    response_id: str
    output_index: int
    item: Item


class ResponseOutputItemDone(ServerEvent):
    type: Literal["response.output_item.done"] = "response.output_item.done"
    response_id: str
    output_index: int
    item: Item


class _PartEvent(ServerEvent):
    response_id: str
    item_id: str
    output_index: int
    content_index: int


class ResponseContentPartAdded(_PartEvent):
    """`part` is an item content part; it goes out as `{"type": "audio" | "text", ...}`."""

    type: Literal["response.content_part.added"] = "response.content_part.added"
    part: ContentPart


class ResponseContentPartDone(_PartEvent):
    type: Literal["response.content_part.done"] = "response.content_part.done"
    part: ContentPart


class ResponseOutputAudioDelta(_PartEvent):
    """`delta`: base64 audio in the session's output format. Beta: `response.audio.delta`."""

    type: Literal["response.output_audio.delta"] = "response.output_audio.delta"
    delta: str


class ResponseOutputAudioDone(_PartEvent):
    type: Literal["response.output_audio.done"] = "response.output_audio.done"


class ResponseOutputAudioTranscriptDelta(_PartEvent):
    type: Literal["response.output_audio_transcript.delta"] = (
        "response.output_audio_transcript.delta"
    )
    delta: str


class ResponseOutputAudioTranscriptDone(_PartEvent):
    type: Literal["response.output_audio_transcript.done"] = (
        "response.output_audio_transcript.done"
    )
    transcript: str


class ResponseOutputTextDelta(_PartEvent):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    delta: str


class ResponseOutputTextDone(_PartEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    text: str


class ResponseFunctionCallArgumentsDelta(ServerEvent):
    type: Literal["response.function_call_arguments.delta"] = (
        "response.function_call_arguments.delta"
    )
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    delta: str


class ResponseFunctionCallArgumentsDone(ServerEvent):
    type: Literal["response.function_call_arguments.done"] = (
        "response.function_call_arguments.done"
    )
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str


class RateLimitsUpdated(ServerEvent):
    type: Literal["rate_limits.updated"] = "rate_limits.updated"
    rate_limits: list[RateLimit]


class ErrorEvent(ServerEvent):
    type: Literal["error"] = "error"
    error: ErrorDetail

    @classmethod
    def of(cls, err: ProtocolError) -> ErrorEvent:
        return cls(
            error=ErrorDetail(
                type=err.type,
                code=err.code,
                message=err.message,
                param=err.param,
                event_id=err.event_id,
            )
        )


class ExtensionEvent(ServerEvent):
    """A server extension event, `x_stepaudio2.<name>`, sent unchanged in both dialects."""

    type: str = Field(pattern=r"^x_stepaudio2\.[a-z0-9_.]+$")
    data: dict[str, Any] = Field(default_factory=dict)
