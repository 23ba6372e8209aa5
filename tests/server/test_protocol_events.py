"""Protocol models: client event parsing and errors, session updates, server events per dialect."""

# Server events are checked against the installed `openai` SDK's own models (GA and beta), the
# way a strict client parses them.

from __future__ import annotations

import json
import typing

import openai.types.beta.realtime as beta_types
import openai.types.realtime as ga_types
import pytest
from pydantic import BaseModel

from server.protocol import (
    OPENAI_VOICES,
    ConversationItemCreateEvent,
    ConversationItemTruncateEvent,
    Dialect,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputAudioBufferAppendEvent,
    MessageItem,
    ProtocolError,
    ResponseCancelEvent,
    ResponseCreateEvent,
    SessionConfig,
    SessionUpdateEvent,
    api_key_from_subprotocols,
    choose_subprotocol,
    detect_dialect,
    encode_server_event,
    errors,
    parse_client_event,
    server_event_to_wire,
)
from server.protocol import server_events as ev
from server.protocol.formats import AudioFormat
from server.protocol.items import ContentPart
from server.protocol.session_config import FunctionTool, InputTranscription, TurnDetection


def _parse_ok(payload: dict) -> object:
    event = parse_client_event(json.dumps(payload))
    assert not isinstance(event, ProtocolError), event
    return event


def _parse_err(raw: str | bytes, **kw) -> ProtocolError:
    event = parse_client_event(raw, **kw)
    assert isinstance(event, ProtocolError), event
    return event


# --- client events: errors ----------------------------------------------------------------------


def test_not_json_is_invalid_json():
    err = _parse_err("{not json")
    assert err.code == errors.INVALID_JSON
    assert _parse_err(b"\xff\xfe").code == errors.INVALID_JSON


def test_non_object_and_missing_type_are_invalid_event():
    assert _parse_err("[1, 2]").code == errors.INVALID_EVENT
    err = _parse_err('{"event_id": "evt_1"}')
    assert (err.code, err.param, err.event_id) == (errors.INVALID_EVENT, "type", "evt_1")
    assert _parse_err('{"type": 7}').code == errors.INVALID_EVENT


def test_unknown_type_echoes_event_id():
    err = _parse_err('{"type": "session.explode", "event_id": "evt_2"}')
    assert (err.code, err.event_id) == (errors.UNKNOWN_EVENT_TYPE, "evt_2")


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"type": "input_audio_buffer.append"}, "audio"),
        ({"type": "input_audio_buffer.append", "audio": 12}, "audio"),
        ({"type": "conversation.item.truncate", "item_id": "i", "content_index": 0},
         "audio_end_ms"),
        ({"type": "conversation.item.truncate", "item_id": "i", "content_index": 0,
          "audio_end_ms": "soon"}, "audio_end_ms"),
        ({"type": "conversation.item.truncate", "item_id": "i", "content_index": 0,
          "audio_end_ms": -5}, "audio_end_ms"),
        ({"type": "conversation.item.retrieve"}, "item_id"),
        ({"type": "conversation.item.create", "item": {"type": "message", "role": "robot",
                                                       "content": []}}, "item.role"),
        ({"type": "conversation.item.create", "item": {"type": "function_call_output",
                                                       "output": "x"}}, "item.call_id"),
        ({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 16000}}}}},
         "session.audio.input.format.rate"),
        ({"type": "session.update", "session": {"input_audio_format": "mp3"}},
         "session.input_audio_format"),
        ({"type": "session.update", "session": {"turn_detection": {"threshold": 3}}},
         "session.turn_detection.threshold"),
        ({"type": "session.update", "session": {"tools": [{"type": "function"}]}},
         "session.tools[0].name"),
        ({"type": "response.create", "response": {"output_modalities": ["video"]}},
         "response.output_modalities[0]"),
        ({"type": "response.create", "response": {"max_output_tokens": 0}},
         "response.max_output_tokens"),
        ({"type": "response.create", "response": {"metadata": {"k": 1}}}, "response.metadata.k"),
        ({"type": "session.update", "session": {"tool_choice": {"type": "function"}}},
         "session.tool_choice"),
        ({"type": "session.update", "session": {"type": "transcription"}}, "session.type"),
    ],
)
def test_missing_or_mistyped_field_names_the_param(payload, param):
    payload["event_id"] = "evt_x"
    err = _parse_err(json.dumps(payload))
    assert err.code == errors.INVALID_EVENT
    assert err.param == param
    assert err.event_id == "evt_x"
    assert payload["type"] in err.message


def test_non_string_event_id_is_invalid():
    err = _parse_err('{"type": "input_audio_buffer.commit", "event_id": 5}')
    assert (err.code, err.param, err.event_id) == (errors.INVALID_EVENT, "event_id", None)


def test_hostile_json_never_raises():
    assert _parse_err("[" * 100_000).code == errors.INVALID_JSON
    deep = '{"type": "response.create", "response": {"metadata": ' + '{"a": ' * 5000 + "1" + \
        "}" * 5000 + "}}"
    assert _parse_err(deep).code in (errors.INVALID_JSON, errors.INVALID_EVENT)
    assert _parse_err("").code == errors.INVALID_JSON
    assert _parse_err("null").code == errors.INVALID_EVENT


def test_mutated_valid_events_never_raise():
    """Every field of valid events replaced by values of the wrong kind: an error, no raise."""
    import random

    rng = random.Random(0)
    valid = [
        {"type": "session.update", "session": {"type": "realtime", "instructions": "x", "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 24000},
                      "turn_detection": {"type": "server_vad", "threshold": 0.5}},
            "output": {"voice": "alloy", "speed": 1.0}}}},
        {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                      "content": [{"type": "input_text",
                                                                   "text": "hi"}]}},
        {"type": "response.create", "response": {"output_modalities": ["audio"],
                                                 "tools": [{"type": "function", "name": "f"}]}},
        {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0,
         "audio_end_ms": 10},
    ]
    junk = [None, 1, -1, 1.5, "", "x", [], {}, [1], {"a": None}, True, "\ud800", 10**30]

    def mutate(obj):
        if isinstance(obj, dict) and obj:
            key = rng.choice(list(obj))
            obj = dict(obj)
            obj[key] = rng.choice(junk) if rng.random() < 0.5 else mutate(obj[key])
            return obj
        if isinstance(obj, list) and obj:
            return [mutate(obj[0])] + obj[1:]
        return rng.choice(junk)

    for _ in range(600):
        payload = mutate(rng.choice(valid))
        result = parse_client_event(json.dumps(payload))
        assert isinstance(result, ProtocolError) or result.type == payload["type"]


def test_content_type_must_fit_the_role():
    err = _parse_err(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "output_audio", "audio": ""}]}}))
    assert err.code == errors.INVALID_EVENT
    assert err.param == "item"
    assert "user" in err.message


def test_event_over_the_limit_is_refused_before_parsing():
    raw = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 2000})
    assert _parse_err(raw, max_bytes=1000).code == errors.EVENT_TOO_LARGE
    assert isinstance(parse_client_event(raw, max_bytes=len(raw)), InputAudioBufferAppendEvent)


def test_error_event_serialises_the_protocol_error():
    err = ProtocolError.cancel_not_active(event_id="evt_9")
    wire = server_event_to_wire(ev.ErrorEvent.of(err), Dialect.GA)
    assert wire["type"] == "error"
    assert wire["error"] == {"type": "invalid_request_error", "code": "response_cancel_not_active",
                             "message": err.message, "param": None, "event_id": "evt_9"}
    assert err.message.startswith("Cancellation failed:")
    assert ProtocolError.active_response("resp_1").code == (
        "conversation_already_has_active_response")
    assert ProtocolError.commit_empty().code == "input_audio_buffer_commit_empty"


# --- client events: accepted shapes -------------------------------------------------------------


def test_every_client_event_of_the_sdk_parses():
    """Events shaped like the SDK's client params (GA) parse into our models."""
    samples = [
        {"type": "session.update", "session": {"type": "realtime"}},
        {"type": "input_audio_buffer.append", "audio": "AAAA"},
        {"type": "input_audio_buffer.commit"},
        {"type": "input_audio_buffer.clear"},
        {"type": "output_audio_buffer.clear"},
        {"type": "conversation.item.create", "previous_item_id": "item_0", "item": {
            "type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "hello"},
                {"type": "input_audio", "audio": "AAAA"}]}},
        {"type": "conversation.item.retrieve", "item_id": "item_1"},
        {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0,
         "audio_end_ms": 1500},
        {"type": "conversation.item.delete", "item_id": "item_1"},
        {"type": "response.create"},
        {"type": "response.cancel", "response_id": "resp_1"},
    ]
    sdk_types = {typing.get_args(m)[0] for m in _sdk_client_models()}
    for sample in samples:
        sample["event_id"] = "evt_" + sample["type"]
        event = _parse_ok(sample)
        assert event.type == sample["type"]
        assert event.event_id == sample["event_id"]
        sdk_types.discard(sample["type"])
    assert not sdk_types, f"client events of the SDK we do not accept: {sdk_types}"


def _sdk_client_models():
    union = typing.get_args(ga_types.RealtimeClientEvent)[0]
    return [m.model_fields["type"].annotation for m in typing.get_args(union)]


def test_items_of_every_kind_and_beta_part_names():
    event = _parse_ok({"type": "conversation.item.create", "item": {
        "type": "message", "role": "assistant", "content": [{"type": "text", "text": "hi"},
                                                            {"type": "audio", "transcript": "t"}]}})
    assert isinstance(event, ConversationItemCreateEvent)
    assert [p.type for p in event.item.content] == ["output_text", "output_audio"]
    call = _parse_ok({"type": "conversation.item.create", "item": {
        "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}})
    assert isinstance(call.item, FunctionCallItem)
    out = _parse_ok({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "c1", "output": "42"}})
    assert isinstance(out.item, FunctionCallOutputItem)
    assert out.item.id is None and out.item.status == "completed"
    system = _parse_ok({"type": "conversation.item.create", "item": {
        "type": "message", "role": "system",
        "content": [{"type": "input_text", "text": "be brief"}]}})
    assert system.item.role == "system"


def test_response_create_ga_and_beta_aliases():
    ga = _parse_ok({"type": "response.create", "response": {
        "output_modalities": ["text"], "instructions": "short", "max_output_tokens": 50,
        "conversation": "none", "metadata": {"topic": "x"},
        "audio": {"output": {"voice": "alloy", "format": {"type": "audio/pcmu"}}},
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]}})
    assert isinstance(ga, ResponseCreateEvent)
    r = ga.response
    assert (r.output_modalities, r.instructions, r.max_output_tokens) == (["text"], "short", 50)
    assert r.out_of_band and r.metadata == {"topic": "x"}
    assert (r.voice, r.output_format) == ("alloy", AudioFormat.PCMU)
    assert r.tools[0].name == "f"
    beta = _parse_ok({"type": "response.create", "response": {
        "modalities": ["text", "audio"], "max_response_output_tokens": "inf",
        "voice": "verse", "output_audio_format": "g711_alaw", "temperature": 0.6}})
    b = beta.response
    assert (b.output_modalities, b.max_output_tokens) == (["text", "audio"], "inf")
    assert (b.voice, b.output_format, b.temperature) == ("verse", AudioFormat.PCMA, 0.6)
    empty = _parse_ok({"type": "response.create", "response": None})
    assert empty.response.output_modalities is None and not empty.response.out_of_band


def test_cancel_and_truncate_fields():
    cancel = _parse_ok({"type": "response.cancel"})
    assert isinstance(cancel, ResponseCancelEvent) and cancel.response_id is None
    trunc = _parse_ok({"type": "conversation.item.truncate", "item_id": "i", "content_index": 0,
                       "audio_end_ms": 640})
    assert isinstance(trunc, ConversationItemTruncateEvent) and trunc.audio_end_ms == 640


# --- session configuration ----------------------------------------------------------------------


def _apply(cfg: SessionConfig, session: dict) -> SessionConfig:
    event = _parse_ok({"type": "session.update", "session": session})
    assert isinstance(event, SessionUpdateEvent)
    return cfg.apply(event.session)


def test_defaults_are_openai_server_vad():
    td = SessionConfig().turn_detection
    assert (td.type, td.threshold, td.prefix_padding_ms, td.silence_duration_ms) == (
        "server_vad", 0.5, 300, 500)
    assert td.create_response and td.interrupt_response and td.idle_timeout_ms is None


def test_ga_update_changes_only_given_fields():
    cfg = SessionConfig(instructions="keep me", voice="default")
    new = _apply(cfg, {"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcmu"},
                  "turn_detection": {"type": "server_vad", "silence_duration_ms": 800}},
        "output": {"voice": "alloy"}}})
    assert new.input_format is AudioFormat.PCMU
    assert new.output_format is AudioFormat.PCM16
    assert new.turn_detection.silence_duration_ms == 800
    assert new.turn_detection.threshold == 0.5
    assert new.voice == "alloy"
    assert new.instructions == "keep me"
    assert cfg.input_format is AudioFormat.PCM16, "apply must not change the old config"


def test_beta_update_changes_only_given_fields():
    cfg = SessionConfig(instructions="keep me")
    new = _apply(cfg, {"modalities": ["text"], "input_audio_format": "g711_alaw",
                       "output_audio_format": "g711_ulaw", "voice": "myvoice",
                       "input_audio_transcription": {"model": "whisper-1"}, "temperature": 0.7,
                       "max_response_output_tokens": 200})
    assert new.output_modalities == ["text"] and not new.audio_output
    assert (new.input_format, new.output_format) == (AudioFormat.PCMA, AudioFormat.PCMU)
    assert new.voice == "myvoice"
    assert new.input_transcription.model == "whisper-1"
    assert (new.temperature, new.max_output_tokens) == (0.7, 200)
    assert new.instructions == "keep me"
    assert new.turn_detection == cfg.turn_detection


def test_turn_detection_null_means_manual_mode_in_both_shapes():
    assert _apply(SessionConfig(), {"turn_detection": None}).turn_detection is None
    ga = _apply(SessionConfig(), {"type": "realtime", "audio": {"input": {"turn_detection": None}}})
    assert ga.turn_detection is None
    # Not mentioning turn detection keeps it.
    assert _apply(SessionConfig(), {"instructions": "x"}).turn_detection is not None


def test_semantic_vad_maps_onto_server_vad_by_eagerness():
    silences = {}
    for eagerness in ("low", "medium", "high", "auto"):
        td = _apply(SessionConfig(), {"turn_detection": {"type": "semantic_vad",
                                                         "eagerness": eagerness}}).turn_detection
        eff = td.effective()
        assert td.type == "semantic_vad" and eff.type == "server_vad"
        silences[eagerness] = eff.silence_duration_ms
    assert silences["low"] > silences["medium"] > silences["high"]
    assert TurnDetection().effective() == TurnDetection()


def test_voice_given_reads_both_shapes_and_openai_voices_are_listed():
    update = _parse_ok({"type": "session.update", "session": {
        "type": "realtime", "audio": {"output": {"voice": {"id": "custom"}}}}}).session
    assert update.voice_given == "custom"
    assert _parse_ok({"type": "session.update", "session": {"voice": "ash"}}).session.voice_given \
        == "ash"
    assert _parse_ok({"type": "session.update", "session": {}}).session.voice_given is None
    assert {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin",
            "cedar"} == OPENAI_VOICES


def test_unknown_session_keys_are_ignored_but_known_ones_are_typed():
    new = _apply(SessionConfig(), {"type": "realtime", "tracing": "auto", "include": [],
                                   "instructions": "hi"})
    assert new.instructions == "hi"


# --- server events against the SDK's models -----------------------------------------------------


def _sample_server_events() -> list[ev.ServerEvent]:
    cfg = SessionConfig(
        instructions="be kind", input_transcription=InputTranscription(model="step-audio-2"),
        tools=[FunctionTool(name="get_time", description="time", parameters={"type": "object"})],
        temperature=0.7,
    )
    manual = cfg.model_copy(update={"turn_detection": None, "output_modalities": ["text"],
                                    "input_format": AudioFormat.PCMA})
    semantic = cfg.model_copy(update={"turn_detection": TurnDetection(type="semantic_vad",
                                                                      eagerness="low")})
    user = MessageItem(id="item_u", role="user", content=[
        ContentPart(type="input_audio", transcript=None),
        ContentPart(type="input_text", text="hi")])
    audio_part = ContentPart(type="output_audio", transcript="hello")
    text_part = ContentPart(type="output_text", text="hello")
    assistant = MessageItem(id="item_a", role="assistant", status="incomplete",
                            content=[audio_part])
    text_reply = MessageItem(id="item_t", role="assistant", content=[text_part])
    call = FunctionCallItem(id="item_c", call_id="call_1", name="get_time", arguments="{}")
    output = FunctionCallOutputItem(id="item_o", call_id="call_1", output="noon")
    usage = ev.Usage(input_tokens=10, output_tokens=5, total_tokens=15)
    done = ev.Response(id="resp_1", status="cancelled", output=[assistant, call], usage=usage,
                       status_details=ev.StatusDetails(type="cancelled", reason="turn_detected"),
                       conversation_id="conv_1", voice="default", metadata={"k": "v"})
    part = {"response_id": "resp_1", "item_id": "item_a", "output_index": 0, "content_index": 0}
    return [
        ev.SessionCreated(session_id="sess_1", session=cfg),
        ev.SessionUpdated(session_id="sess_1", session=manual),
        ev.SessionUpdated(session_id="sess_1", session=semantic),
        ev.ConversationCreated(),
        ev.ConversationItemAdded(item=user, previous_item_id=None),
        ev.ConversationItemAdded(item=call, previous_item_id="item_u"),
        ev.ConversationItemAdded(item=output, previous_item_id="item_c"),
        ev.ConversationItemDone(item=assistant, previous_item_id="item_u"),
        ev.ConversationItemRetrieved(item=text_reply),
        ev.ConversationItemTruncated(item_id="item_a", content_index=0, audio_end_ms=1200),
        ev.ConversationItemDeleted(item_id="item_a"),
        ev.InputAudioTranscriptionDelta(item_id="item_u", delta="he"),
        ev.InputAudioTranscriptionCompleted(item_id="item_u", transcript="hello",
                                            usage=ev.TranscriptionUsage(seconds=1.5)),
        ev.InputAudioTranscriptionFailed(item_id="item_u", error=ev.StatusError(
            type="transcription_error", code="engine_error", message="boom")),
        ev.InputAudioBufferSpeechStarted(audio_start_ms=320, item_id="item_u"),
        ev.InputAudioBufferSpeechStopped(audio_end_ms=1820, item_id="item_u"),
        ev.InputAudioBufferCommitted(item_id="item_u", previous_item_id=None),
        ev.InputAudioBufferCleared(),
        ev.InputAudioBufferTimeoutTriggered(audio_start_ms=0, audio_end_ms=5000, item_id="item_x"),
        ev.ResponseCreated(response=ev.Response(id="resp_1", conversation_id="conv_1",
                                                metadata={"k": "v"})),
        ev.ResponseOutputItemAdded(response_id="resp_1", output_index=0,
                                   item=assistant.model_copy(update={"status": "in_progress",
                                                                     "content": []})),
        ev.ResponseContentPartAdded(**part, part=ContentPart(type="output_audio", transcript="")),
        ev.ResponseOutputAudioDelta(**part, delta="AAAA"),
        ev.ResponseOutputAudioTranscriptDelta(**part, delta="hel"),
        ev.ResponseOutputAudioDone(**part),
        ev.ResponseOutputAudioTranscriptDone(**part, transcript="hello"),
        ev.ResponseOutputTextDelta(**part, delta="hel"),
        ev.ResponseOutputTextDone(**part, text="hello"),
        ev.ResponseContentPartDone(**part, part=audio_part),
        ev.ResponseOutputItemDone(response_id="resp_1", output_index=0, item=assistant),
        ev.ResponseFunctionCallArgumentsDelta(response_id="resp_1", item_id="item_c",
                                              output_index=1, call_id="call_1", delta="{"),
        ev.ResponseFunctionCallArgumentsDone(response_id="resp_1", item_id="item_c",
                                             output_index=1, call_id="call_1", name="get_time",
                                             arguments="{}"),
        ev.ResponseDone(response=done),
        ev.ResponseDone(response=ev.Response(status="completed", output=[text_reply],
                                             output_modalities=["text"],
                                             status_details=None, usage=usage)),
        ev.RateLimitsUpdated(rate_limits=[ev.RateLimit(name="requests", limit=100, remaining=99,
                                                       reset_seconds=1.0)]),
        ev.ErrorEvent.of(ProtocolError(code=errors.INVALID_EVENT, message="bad", param="audio",
                                       event_id="evt_1")),
    ]


def _sdk_models(union) -> dict[str, type[BaseModel]]:
    members = typing.get_args(typing.get_args(union)[0])
    return {typing.get_args(m.model_fields["type"].annotation)[0]: m for m in members}


def _extras(model: BaseModel, path: str = "") -> list[str]:
    """Keys a strict client would not know: extras at any depth of the parsed SDK model."""
    found = [f"{path}.{k}" for k in (model.__pydantic_extra__ or {})]
    for name in type(model).model_fields:
        value = getattr(model, name)
        values = value if isinstance(value, list) else [value]
        for i, v in enumerate(values):
            if isinstance(v, BaseModel):
                index = f"[{i}]" if isinstance(value, list) else ""
                found += _extras(v, f"{path}.{name}{index}")
    return found


# Session keys OpenAI itself sends that the SDK models lack (GA: the request model is used).
_GA_ALLOWED_EXTRAS = {".session.id", ".session.object"}


@pytest.mark.parametrize(
    ("dialect", "union", "allowed"),
    [(Dialect.GA, ga_types.RealtimeServerEvent, _GA_ALLOWED_EXTRAS),
     (Dialect.BETA, beta_types.RealtimeServerEvent, {".session.object"})],
)
def test_server_events_parse_strictly_with_the_sdk(dialect, union, allowed):
    models = _sdk_models(union)
    sent = 0
    for event in _sample_server_events():
        text = encode_server_event(event, dialect)
        if text is None:
            continue
        wire = json.loads(text)
        assert wire["type"] in models, f"{dialect}: SDK has no event {wire['type']}"
        parsed = models[wire["type"]].model_validate(wire)
        extras = set(_extras(parsed)) - allowed
        assert not extras, f"{wire['type']}: keys unknown to the SDK: {extras}"
        sent += 1
    assert sent >= 30


def test_beta_connections_never_see_ga_names_or_shape():
    ga_only = {"response.output_audio.delta", "response.output_audio.done",
               "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
               "response.output_text.delta", "response.output_text.done",
               "conversation.item.added", "conversation.item.done",
               "input_audio_buffer.timeout_triggered"}
    names = set()
    for event in _sample_server_events():
        text = encode_server_event(event, Dialect.BETA)
        if text is None:
            continue
        wire = json.loads(text)
        names.add(wire["type"])
        assert '"output_audio"' not in text and '"output_text"' not in text, text
        if "session" in wire:
            assert "audio" not in wire["session"] and "type" not in wire["session"]
            assert wire["session"]["modalities"] in (["text", "audio"], ["text"])
        if "response" in wire:
            assert "output_modalities" not in wire["response"]
    assert not names & ga_only
    assert {"response.audio.delta", "response.audio_transcript.delta", "response.text.delta",
            "conversation.item.created", "conversation.created"} <= names


def test_ga_connections_get_ga_names_and_shape():
    names = set()
    for event in _sample_server_events():
        text = encode_server_event(event, Dialect.GA)
        if text is None:
            continue
        wire = json.loads(text)
        names.add(wire["type"])
        if wire["type"] == "session.created":
            session = wire["session"]
            assert session["type"] == "realtime"
            assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
            assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
            assert session["audio"]["input"]["transcription"] == {"model": "step-audio-2"}
    assert "conversation.created" not in names
    assert {"response.output_audio.delta", "conversation.item.added",
            "conversation.item.done", "input_audio_buffer.timeout_triggered"} <= names


def test_session_rendering_round_trips_through_session_update():
    """A client may send back the session it received; that must not change the config."""
    cfg = SessionConfig(voice="v1", input_format=AudioFormat.PCMU, output_modalities=["text"],
                        turn_detection=TurnDetection(silence_duration_ms=700, idle_timeout_ms=9000))
    for dialect in Dialect:
        wire = server_event_to_wire(ev.SessionCreated(session_id="s", session=cfg), dialect)
        again = _apply(SessionConfig(), wire["session"])
        assert again.input_format is AudioFormat.PCMU
        assert again.voice == "v1"
        assert again.turn_detection.silence_duration_ms == 700
        assert again.turn_detection.idle_timeout_ms == 9000
        assert not again.audio_output


def test_event_ids_are_unique():
    ids = [e.event_id for e in _sample_server_events()]
    ids += [ev.InputAudioBufferCleared().event_id for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("event_") for i in ids)


def test_extension_events_pass_unchanged_in_both_dialects():
    event = ev.ExtensionEvent(type="x_stepaudio2.voice_registered", data={"voice": "v1"})
    for dialect in Dialect:
        wire = server_event_to_wire(event, dialect)
        assert wire == {"type": "x_stepaudio2.voice_registered", "event_id": event.event_id,
                        "voice": "v1"}
    with pytest.raises(ValueError):
        ev.ExtensionEvent(type="response.hijack")


def test_milliseconds_are_integers_on_the_wire():
    wire = server_event_to_wire(
        ev.InputAudioBufferSpeechStopped(audio_end_ms=1820, item_id="i"), Dialect.GA)
    assert isinstance(wire["audio_end_ms"], int)


# --- handshake ----------------------------------------------------------------------------------


def test_dialect_from_header_or_subprotocol():
    assert detect_dialect({}, []) is Dialect.GA
    assert detect_dialect({"OpenAI-Beta": "realtime=v1"}, []) is Dialect.BETA
    assert detect_dialect({"openai-beta": "assistants=v2, realtime=v1"}, []) is Dialect.BETA
    assert detect_dialect({}, ["realtime", "openai-beta.realtime-v1"]) is Dialect.BETA
    assert detect_dialect({}, ["realtime", "openai-insecure-api-key.k"]) is Dialect.GA


def test_subprotocol_answer_and_key():
    offered = ["realtime", "openai-insecure-api-key.sk-123", "openai-beta.realtime-v1"]
    assert choose_subprotocol(offered) == "realtime"
    assert choose_subprotocol(["openai-beta.realtime-v1"]) == "openai-beta.realtime-v1"
    assert choose_subprotocol(["openai-insecure-api-key.x"]) is None
    assert choose_subprotocol([]) is None
    assert api_key_from_subprotocols(offered) == "sk-123"
    assert api_key_from_subprotocols(["realtime"]) is None
