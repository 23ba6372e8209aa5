"""GA and beta dialects: handshake detection and the wire form of every server event."""

# GA is the default. A connection is beta when the client sends `OpenAI-Beta: realtime=v1` or
# offers the subprotocol `openai-beta.realtime-v1`; it then receives only beta event names and the
# flat session shape, never a GA one.

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from server.protocol.items import ContentPart, FunctionCallItem, FunctionCallOutputItem, MessageItem
from server.protocol.server_events import ExtensionEvent, Response, ServerEvent
from server.protocol.session_config import GAAudioFormat, SessionConfig, TurnDetection

BETA_SUBPROTOCOL = "openai-beta.realtime-v1"
REALTIME_SUBPROTOCOL = "realtime"
API_KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."


class Dialect(StrEnum):
    GA = "ga"
    BETA = "beta"


def detect_dialect(headers: Mapping[str, str], subprotocols: Iterable[str]) -> Dialect:
    """Beta when `OpenAI-Beta: realtime=v1` or the beta subprotocol was offered, else GA."""
    beta_header = ""
    for name, value in headers.items():
        if name.lower() == "openai-beta":
            beta_header = value
    if "realtime=v1" in beta_header.replace(" ", "").split(","):
        return Dialect.BETA
    return Dialect.BETA if BETA_SUBPROTOCOL in list(subprotocols) else Dialect.GA


def choose_subprotocol(offered: Iterable[str]) -> str | None:
    """The subprotocol to answer with: `realtime` when offered (browsers require an answer when
    they offer any), else the beta one when offered; never the API key one."""
    offered = list(offered)
    for name in (REALTIME_SUBPROTOCOL, BETA_SUBPROTOCOL):
        if name in offered:
            return name
    return None


def api_key_from_subprotocols(offered: Iterable[str]) -> str | None:
    """The key a browser passes as subprotocol `openai-insecure-api-key.<key>`, if any."""
    for name in offered:
        if name.startswith(API_KEY_SUBPROTOCOL_PREFIX):
            return name[len(API_KEY_SUBPROTOCOL_PREFIX) :] or None
    return None


# --- event names ------------------------------------------------------------------------------

_BETA_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}
# Events a dialect has no counterpart for: not sent on such a connection.
_NOT_IN = {
    Dialect.GA: frozenset({"conversation.created"}),
    Dialect.BETA: frozenset({"conversation.item.done", "input_audio_buffer.timeout_triggered"}),
}

# Fields a dialect's event has no such key for (beta `function_call_arguments.done` has no name).
_DROP_FIELDS = {
    Dialect.GA: {},
    Dialect.BETA: {"response.function_call_arguments.done": frozenset({"name"})},
}


def wire_type(event_type: str, dialect: Dialect) -> str | None:
    """The event name a connection of `dialect` receives for `event_type`, or None for none."""
    if event_type in _NOT_IN[dialect]:
        return None
    return _BETA_NAMES.get(event_type, event_type) if dialect is Dialect.BETA else event_type


# --- objects ------------------------------------------------------------------------------------

_BETA_PART_TYPES = {"output_text": "text", "output_audio": "audio"}
_EVENT_PART_TYPES = {"output_text": "text", "output_audio": "audio", "input_text": "text",
                     "input_audio": "audio"}


def render_part(part: ContentPart, dialect: Dialect) -> dict[str, Any]:
    """An item's content part (`output_audio` is `audio` in beta)."""
    out = part.model_dump(exclude_none=True)
    if dialect is Dialect.BETA:
        out["type"] = _BETA_PART_TYPES.get(part.type, part.type)
    return out


def render_event_part(part: ContentPart) -> dict[str, Any]:
    """The `part` of `response.content_part.*`: type `audio` or `text` in both dialects."""
    out = part.model_dump(exclude_none=True)
    out["type"] = _EVENT_PART_TYPES[part.type]
    return out


def render_item(item: MessageItem | FunctionCallItem | FunctionCallOutputItem,
                dialect: Dialect) -> dict[str, Any]:
    out = item.model_dump(exclude_none=True, exclude={"content"})
    if isinstance(item, MessageItem):
        out["content"] = [render_part(p, dialect) for p in item.content]
    return out


def _turn_detection(td: TurnDetection | None, dialect: Dialect) -> dict[str, Any] | None:
    if td is None:
        return None
    if td.type == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": td.eagerness or "auto",
                "create_response": td.create_response, "interrupt_response": td.interrupt_response}
    out = td.model_dump(exclude={"eagerness"})
    if dialect is Dialect.BETA and td.idle_timeout_ms is None:
        del out["idle_timeout_ms"]  # beta sessions never had the field
    return out


def _tool_choice(choice: Any, dialect: Dialect) -> Any:
    name = choice if isinstance(choice, str) else choice.name
    if dialect is Dialect.BETA:
        return name
    if name in ("auto", "none", "required"):
        return name
    return {"type": "function", "name": name}


def _extensions(cfg: SessionConfig) -> dict[str, Any]:
    ext = cfg.x_stepaudio2.model_dump(exclude_none=True)
    return {"x_stepaudio2": ext} if ext else {}


def render_session(cfg: SessionConfig, session_id: str, dialect: Dialect) -> dict[str, Any]:
    """The session object in the dialect's shape (GA nested `audio`, beta flat fields)."""
    transcription = (cfg.input_transcription.model_dump(exclude_none=True)
                     if cfg.input_transcription else None)
    noise = cfg.noise_reduction.model_dump(exclude_none=True) if cfg.noise_reduction else None
    tools = [t.model_dump() for t in cfg.tools]
    if dialect is Dialect.BETA:
        # beta `modalities` always lists text beside audio; `model` is omitted (the beta schema
        # only knows OpenAI's model names).
        modalities = ["text", "audio"] if cfg.audio_output else ["text"]
        out: dict[str, Any] = {
            "id": session_id, "object": "realtime.session", "modalities": modalities,
            "instructions": cfg.instructions, "voice": cfg.voice, "speed": cfg.speed,
            "input_audio_format": cfg.input_format.value,
            "output_audio_format": cfg.output_format.value,
            "input_audio_transcription": transcription,
            "input_audio_noise_reduction": noise,
            "turn_detection": _turn_detection(cfg.turn_detection, dialect),
            "tools": tools, "tool_choice": _tool_choice(cfg.tool_choice, dialect),
            "max_response_output_tokens": cfg.max_output_tokens,
        }
        if cfg.temperature is not None:
            out["temperature"] = cfg.temperature
        return out | _extensions(cfg)
    return {
        "type": "realtime", "object": "realtime.session", "id": session_id, "model": cfg.model,
        "output_modalities": list(cfg.output_modalities), "instructions": cfg.instructions,
        "audio": {
            "input": {
                "format": GAAudioFormat.of(cfg.input_format).model_dump(exclude_none=True),
                "transcription": transcription,
                "noise_reduction": noise,
                "turn_detection": _turn_detection(cfg.turn_detection, dialect),
            },
            "output": {
                "format": GAAudioFormat.of(cfg.output_format).model_dump(exclude_none=True),
                "voice": cfg.voice,
                "speed": cfg.speed,
            },
        },
        "tools": tools, "tool_choice": _tool_choice(cfg.tool_choice, dialect),
        "max_output_tokens": cfg.max_output_tokens,
    } | _extensions(cfg)


def render_response(resp: Response, dialect: Dialect) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": resp.id, "object": resp.object, "status": resp.status,
        "status_details": (resp.status_details.model_dump(exclude_none=True)
                           if resp.status_details else None),
        "output": [render_item(i, dialect) for i in resp.output],
        "conversation_id": resp.conversation_id,
        "max_output_tokens": resp.max_output_tokens,
        "usage": resp.usage.model_dump() if resp.usage else None,
        "metadata": resp.metadata,
    }
    audio = "audio" in resp.output_modalities
    if dialect is Dialect.BETA:
        out["modalities"] = ["text", "audio"] if audio else ["text"]
        out["voice"] = resp.voice
        out["output_audio_format"] = resp.output_format.value
        if resp.temperature is not None:
            out["temperature"] = resp.temperature
    else:
        out["output_modalities"] = list(resp.output_modalities)
        out["audio"] = {"output": {
            "format": GAAudioFormat.of(resp.output_format).model_dump(exclude_none=True),
            "voice": resp.voice,
        }}
    return out


# --- events -------------------------------------------------------------------------------------


def server_event_to_wire(event: ServerEvent, dialect: Dialect) -> dict[str, Any] | None:
    """The JSON object a `dialect` connection receives for `event`; None: send nothing."""
    if isinstance(event, ExtensionEvent):
        return {"type": event.type, "event_id": event.event_id, **event.data}
    kind = wire_type(event.type, dialect)  # type: ignore[attr-defined]
    if kind is None:
        return None
    out: dict[str, Any] = {"type": kind, "event_id": event.event_id}
    dropped = _DROP_FIELDS[dialect].get(event.type, frozenset())  # type: ignore[attr-defined]
    for name in type(event).model_fields:
        if name in ("type", "event_id", "session_id") or name in dropped:
            continue
        value = getattr(event, name)
        if name == "session":
            out[name] = render_session(value, event.session_id, dialect)  # type: ignore[attr-defined]
        elif name == "item":
            out[name] = render_item(value, dialect)
        elif name == "part":
            out[name] = render_event_part(value)
        elif name == "response":
            out[name] = render_response(value, dialect)
        elif isinstance(value, list):
            out[name] = [v.model_dump(mode="json") if hasattr(v, "model_dump") else v
                         for v in value]
        elif hasattr(value, "model_dump"):
            out[name] = value.model_dump(mode="json")
        else:
            out[name] = value
    return out


def encode_server_event(event: ServerEvent, dialect: Dialect) -> str | None:
    """`server_event_to_wire` as compact JSON text; None when the dialect has no such event."""
    wire = server_event_to_wire(event, dialect)
    return None if wire is None else json.dumps(wire, separators=(",", ":"), ensure_ascii=False)
