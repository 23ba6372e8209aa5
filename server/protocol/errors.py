"""Stable error codes of the realtime protocol and the `ProtocolError` value that carries one."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# Error `type` values as OpenAI uses them.
INVALID_REQUEST_ERROR = "invalid_request_error"
SERVER_ERROR = "server_error"

# Event parsing.
INVALID_JSON = "invalid_json"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
INVALID_EVENT = "invalid_event"  # missing or mistyped field; `param` names it
EVENT_TOO_LARGE = "event_too_large"

# Audio payloads.
INVALID_BASE64 = "invalid_base64"
INVALID_AUDIO_LENGTH = "invalid_audio_length"  # odd byte count for pcm16
BUFFER_TOO_LARGE = "buffer_too_large"
INPUT_AUDIO_BUFFER_COMMIT_EMPTY = "input_audio_buffer_commit_empty"

# Conversation and responses.
CONVERSATION_ALREADY_HAS_ACTIVE_RESPONSE = "conversation_already_has_active_response"
RESPONSE_CANCEL_NOT_ACTIVE = "response_cancel_not_active"
ITEM_TRUNCATE_INVALID_AUDIO_END_MS = "item_truncate_invalid_audio_end_ms"
ITEM_TRUNCATE_INVALID_ITEM_ID = "item_truncate_invalid_item_id"
ITEM_TRUNCATE_INVALID_CONTENT_INDEX = "item_truncate_invalid_content_index"
ITEM_RETRIEVE_INVALID_ITEM_ID = "item_retrieve_invalid_item_id"
ITEM_DELETE_INVALID_ITEM_ID = "item_delete_invalid_item_id"
INVALID_ITEM = "invalid_item"
PREVIOUS_ITEM_NOT_FOUND = "previous_item_not_found"
UNKNOWN_VOICE = "unknown_voice"
UNSUPPORTED_FEATURE = "unsupported_feature"
PROMPT_TOO_LONG = "prompt_too_long"

# Server side.
ENGINE_ERROR = "engine_error"
INTERNAL_ERROR = "internal_error"

#: OpenAI words a cancel without an active response like this; clients match the prefix.
CANCEL_NOT_ACTIVE_MESSAGE = "Cancellation failed: no active response found"

#: Codes that clients treat as non-fatal races (see PROTOCOL.md, "Strictness").
BENIGN_CODES = frozenset(
    {
        RESPONSE_CANCEL_NOT_ACTIVE,
        CONVERSATION_ALREADY_HAS_ACTIVE_RESPONSE,
        ITEM_RETRIEVE_INVALID_ITEM_ID,
        INPUT_AUDIO_BUFFER_COMMIT_EMPTY,
    }
)


class ProtocolError(BaseModel):
    """A refusal to send back as an `error` event; the session goes on.

    `event_id` is the client event's id that caused it (echoed as `error.event_id`).
    """

    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    param: str | None = None
    event_id: str | None = None
    type: str = INVALID_REQUEST_ERROR

    @classmethod
    def cancel_not_active(cls, event_id: str | None = None) -> ProtocolError:
        return cls(
            code=RESPONSE_CANCEL_NOT_ACTIVE, message=CANCEL_NOT_ACTIVE_MESSAGE, event_id=event_id
        )

    @classmethod
    def active_response(cls, response_id: str, event_id: str | None = None) -> ProtocolError:
        return cls(
            code=CONVERSATION_ALREADY_HAS_ACTIVE_RESPONSE,
            message=f"Conversation already has an active response in progress: {response_id}. "
            "Wait until the response is finished before creating a new one.",
            event_id=event_id,
        )

    @classmethod
    def commit_empty(cls, event_id: str | None = None) -> ProtocolError:
        return cls(
            code=INPUT_AUDIO_BUFFER_COMMIT_EMPTY,
            message="Error committing input audio buffer: the buffer is empty.",
            event_id=event_id,
        )
