"""OpenAI Realtime protocol: client/server event models, session config, items, GA/beta dialects.

API overview (import from the submodules or from here):

- Client events: `parse_client_event(raw, max_bytes) -> ClientEvent | ProtocolError` (never
  raises; beta aliases folded into GA form). Event classes: `SessionUpdateEvent`,
  `InputAudioBufferAppendEvent` (`.audio` base64: decode with `server.audio_codecs.b64decode_audio`,
  which raises `AudioPayloadError(code)`), `InputAudioBufferCommitEvent`,
  `InputAudioBufferClearEvent`, `OutputAudioBufferClearEvent`, `ConversationItemCreateEvent`,
  `ConversationItemRetrieveEvent`, `ConversationItemTruncateEvent`, `ConversationItemDeleteEvent`,
  `ResponseCreateEvent` (`.response: ResponseParams`, None fields = session's value),
  `ResponseCancelEvent`.
- Session: `SessionConfig` (canonical; `cfg.apply(update)` returns a new config with only the
  given fields changed; `update.voice_given` for voice checks), `TurnDetection` (`.effective()`
  maps semantic_vad onto server_vad), `OPENAI_VOICES`, `DEFAULT_VOICE`.
- Items: `MessageItem`, `FunctionCallItem`, `FunctionCallOutputItem`, `ContentPart`, `Item`
  (GA content types; ids are None until the session assigns them with `new_item_id()`).
- Server events (`server_events`): one model per event, GA type names, fresh `event_id` each;
  `ErrorEvent.of(ProtocolError)`; `Response`, `Usage`, `StatusDetails`.
- Wire: `detect_dialect(headers, subprotocols)`, `choose_subprotocol(offered)`,
  `api_key_from_subprotocols(offered)`, `encode_server_event(event, dialect) -> str | None`
  (None: the dialect has no such event, e.g. `conversation.item.done` on beta; send nothing).
- Audio formats: `AudioFormat` (values `pcm16`, `g711_ulaw`, `g711_alaw`; `.sample_rate`,
  `.ga_type`); codecs in `server.audio_codecs`, resampling in `server.resample`, VAD and turn
  detection in `server.vad` (`TurnDetector(SileroVad(), cfg.turn_detection.effective())`).
- Errors: codes as constants in `errors` (`errors.INVALID_EVENT`, ...), `ProtocolError` with
  helpers `cancel_not_active()`, `active_response()`, `commit_empty()`; `errors.BENIGN_CODES`.
"""

from server.protocol.client_events import (
    DEFAULT_MAX_EVENT_BYTES,
    ClientEvent,
    ConversationItemCreateEvent,
    ConversationItemDeleteEvent,
    ConversationItemRetrieveEvent,
    ConversationItemTruncateEvent,
    InputAudioBufferAppendEvent,
    InputAudioBufferClearEvent,
    InputAudioBufferCommitEvent,
    OutputAudioBufferClearEvent,
    ResponseCancelEvent,
    ResponseCreateEvent,
    ResponseParams,
    SessionUpdateEvent,
    parse_client_event,
)
from server.protocol.dialect import (
    Dialect,
    api_key_from_subprotocols,
    choose_subprotocol,
    detect_dialect,
    encode_server_event,
    server_event_to_wire,
)
from server.protocol.errors import ProtocolError
from server.protocol.formats import AudioFormat
from server.protocol.ids import (
    new_call_id,
    new_event_id,
    new_item_id,
    new_response_id,
    new_session_id,
)
from server.protocol.items import (
    ContentPart,
    FunctionCallItem,
    FunctionCallOutputItem,
    Item,
    MessageItem,
)
from server.protocol.session_config import (
    DEFAULT_VOICE,
    OPENAI_VOICES,
    FunctionTool,
    InputTranscription,
    SessionConfig,
    SessionUpdate,
    TurnDetection,
)

__all__ = [
    "AudioFormat", "DEFAULT_MAX_EVENT_BYTES", "DEFAULT_VOICE", "OPENAI_VOICES", "ClientEvent",
    "ContentPart",
    "ConversationItemCreateEvent", "ConversationItemDeleteEvent", "ConversationItemRetrieveEvent",
    "ConversationItemTruncateEvent", "Dialect", "FunctionCallItem", "FunctionCallOutputItem",
    "FunctionTool", "InputAudioBufferAppendEvent", "InputAudioBufferClearEvent",
    "InputAudioBufferCommitEvent", "InputTranscription", "Item", "MessageItem",
    "OutputAudioBufferClearEvent", "ProtocolError", "ResponseCancelEvent", "ResponseCreateEvent",
    "ResponseParams", "SessionConfig", "SessionUpdate", "SessionUpdateEvent", "TurnDetection",
    "api_key_from_subprotocols", "choose_subprotocol", "detect_dialect", "encode_server_event",
    "new_call_id", "new_event_id", "new_item_id", "new_response_id", "new_session_id",
    "parse_client_event", "server_event_to_wire",
]
