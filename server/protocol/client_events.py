"""Client events of the realtime protocol, parsed by one discriminated union that never raises."""

# Beta aliases are folded into the GA form here (`modalities` -> `output_modalities`,
# `max_response_output_tokens` -> `max_output_tokens`, beta content part names), so the session
# sees one shape whichever dialect the client speaks.

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from server.protocol import errors
from server.protocol.errors import ProtocolError
from server.protocol.formats import AudioFormat
from server.protocol.items import Item
from server.protocol.session_config import (
    FunctionTool,
    GAAudioFormat,
    MaxTokens,
    Modality,
    SessionUpdate,
    ToolChoice,
    VoiceId,
)

#: PROTOCOL.md: `input_audio_buffer.append` carries up to 15 MiB per event.
DEFAULT_MAX_EVENT_BYTES = 15 * 1024 * 1024


class _ClientEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event_id: str | None = None


class SessionUpdateEvent(_ClientEvent):
    type: Literal["session.update"]
    session: SessionUpdate


class InputAudioBufferAppendEvent(_ClientEvent):
    type: Literal["input_audio_buffer.append"]
    audio: str  # base64 in the session's input format; decode with server.audio_codecs


class InputAudioBufferCommitEvent(_ClientEvent):
    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClearEvent(_ClientEvent):
    type: Literal["input_audio_buffer.clear"]


class OutputAudioBufferClearEvent(_ClientEvent):
    type: Literal["output_audio_buffer.clear"]


class ConversationItemCreateEvent(_ClientEvent):
    type: Literal["conversation.item.create"]
    item: Item
    previous_item_id: str | None = None


class ConversationItemRetrieveEvent(_ClientEvent):
    type: Literal["conversation.item.retrieve"]
    item_id: str


class ConversationItemTruncateEvent(_ClientEvent):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = Field(ge=0)
    audio_end_ms: int = Field(ge=0)


class ConversationItemDeleteEvent(_ClientEvent):
    type: Literal["conversation.item.delete"]
    item_id: str


class ResponseParams(BaseModel):
    """Per-response overrides of `response.create`; None means "use the session's"."""

    model_config = ConfigDict(extra="ignore")

    instructions: str | None = None
    output_modalities: list[Modality] | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    conversation: str | None = None  # "auto" (default) | "none" (out of band)
    metadata: dict[str, str] | None = None
    input: list[Item] | None = None
    voice: str | None = None
    output_format: AudioFormat | None = None

    @model_validator(mode="before")
    @classmethod
    def _fold_aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "modalities" in data and "output_modalities" not in data:
            data["output_modalities"] = data.pop("modalities")
        if "max_response_output_tokens" in data and "max_output_tokens" not in data:
            data["max_output_tokens"] = data.pop("max_response_output_tokens")
        if "output_audio_format" in data and "output_format" not in data:
            data["output_format"] = data.pop("output_audio_format")
        audio = data.pop("audio", None)
        output = audio.get("output") if isinstance(audio, dict) else None
        if isinstance(output, dict):
            if output.get("voice") is not None:
                voice = output["voice"]
                is_id = isinstance(voice, dict)
                data["voice"] = VoiceId.model_validate(voice).id if is_id else voice
            if output.get("format") is not None:
                data["output_format"] = GAAudioFormat.model_validate(output["format"]).to_format()
        return data

    @property
    def out_of_band(self) -> bool:
        return self.conversation == "none"


class ResponseCreateEvent(_ClientEvent):
    type: Literal["response.create"]
    response: ResponseParams = Field(default_factory=ResponseParams)

    @model_validator(mode="before")
    @classmethod
    def _null_response(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("response", 0) is None:
            return {k: v for k, v in data.items() if k != "response"}
        return data


class ResponseCancelEvent(_ClientEvent):
    type: Literal["response.cancel"]
    response_id: str | None = None


ClientEvent = Annotated[
    SessionUpdateEvent
    | InputAudioBufferAppendEvent
    | InputAudioBufferCommitEvent
    | InputAudioBufferClearEvent
    | OutputAudioBufferClearEvent
    | ConversationItemCreateEvent
    | ConversationItemRetrieveEvent
    | ConversationItemTruncateEvent
    | ConversationItemDeleteEvent
    | ResponseCreateEvent
    | ResponseCancelEvent,
    Field(discriminator="type"),
]

CLIENT_EVENT_ADAPTER: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)
CLIENT_EVENT_TYPES = frozenset(
    get_args(member.model_fields["type"].annotation)[0]
    for member in get_args(get_args(ClientEvent)[0])
)


_ITEM_TAGS = frozenset({"message", "function_call", "function_call_output"})


_TYPE_LABELS = frozenset({"int", "str", "float", "bool", "none", "dict", "list"})


def _is_union_label(part: str) -> bool:
    """Pydantic names union members in error locations (`constrained-int`, `literal['inf']`,
    `VoiceId`); those are not parameters. Our field names are lower snake case."""
    return part in _TYPE_LABELS or part[:1].isupper() or any(c in part for c in "[-(")


def _param(loc: tuple[int | str, ...]) -> str:
    """Pydantic error location -> OpenAI-style parameter path, e.g. `item.content[0].type`."""
    out = ""
    prev: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _ITEM_TAGS and (prev == "item" or isinstance(prev, int)):
            pass  # the union's tag, not a field
        elif not _is_union_label(part):
            out += ("." if out else "") + part
        prev = part
    return out


def parse_client_event(
    raw: str | bytes, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> ClientEvent | ProtocolError:
    """Parse one websocket message. Bad input gives a `ProtocolError`; this never raises."""
    if len(raw) > max_bytes:
        return ProtocolError(
            code=errors.EVENT_TOO_LARGE,
            message=f"Event of {len(raw)} bytes exceeds the limit of {max_bytes} bytes.",
        )
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return ProtocolError(code=errors.INVALID_JSON, message=f"Invalid JSON: {exc}")
    except RecursionError:
        return ProtocolError(code=errors.INVALID_JSON, message="Invalid JSON: nested too deeply.")
    if not isinstance(data, dict):
        return ProtocolError(
            code=errors.INVALID_EVENT, message="An event must be a JSON object.", param="type"
        )
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    kind = data.get("type")
    if not isinstance(kind, str):
        return ProtocolError(
            code=errors.INVALID_EVENT,
            message="Missing or non-string required parameter: 'type'.",
            param="type",
            event_id=event_id,
        )
    if kind not in CLIENT_EVENT_TYPES:
        return ProtocolError(
            code=errors.UNKNOWN_EVENT_TYPE,
            message=f"Invalid value: '{kind[:100]}'. Unknown client event type.",
            param="type",
            event_id=event_id,
        )
    try:
        return CLIENT_EVENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = tuple(first["loc"])
        if loc and loc[0] == kind:
            loc = loc[1:]
        param = _param(loc) or None
        where = f" at '{param}'" if param else ""
        return ProtocolError(
            code=errors.INVALID_EVENT,
            message=f"Invalid '{kind}' event{where}: {first['msg']}.",
            param=param,
            event_id=event_id,
        )
    except RecursionError:
        return ProtocolError(code=errors.INVALID_EVENT, message=f"Invalid '{kind}' event: "
                             "nested too deeply.", event_id=event_id)
