"""Session logic against fakes (engine + token2wav) on a real uvicorn: ordered server events."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from server.app import Services, create_app
from server.settings import Settings
from tests.helpers import free_port
from tests.server.fakes import (
    Client,
    FakeEngine,
    FakeToken2wav,
    FakeVocab,
    ServerThread,
    pcm16,
    ta4_reply,
    utterance,
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from engine.tokenizer_build import write_tokenizer
    from engine.tokens import SpecialTokens

    folder = tmp_path_factory.mktemp("tok")
    write_tokenizer(folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    return tok, SpecialTokens.from_tokenizer(tok)


@pytest.fixture(scope="module")
def hello_pcm() -> bytes:
    return pcm16(utterance("hello, how are you today"))


def make_engine(tokenizer, n_codes: int = 60, step_s: float = 0.002, **kw) -> FakeEngine:
    tok, sp = tokenizer
    vocab = FakeVocab(sp.audio_base, sp.tts_pad, sp.tts_end, sp.eot, sp.audio_pad,
                      tuple(tok.encode("Hello there friend")))
    return FakeEngine(vocab, [ta4_reply(vocab, n_codes)], text_reply=tok.encode("hello world"),
                      tts_start_id=sp.tts_start, step_s=step_s, **kw)


@contextlib.contextmanager
def serving(tokenizer, engine: FakeEngine | None = None, token2wav=None, **settings):
    tok, sp = tokenizer
    engine = engine or make_engine(tokenizer)
    token2wav = token2wav or FakeToken2wav()

    async def build(_settings):
        return Services(engine, token2wav, tok, sp)

    app = create_app(Settings(model=Path("/nonexistent"), **settings), services_builder=build)
    with ServerThread(app, free_port()) as server:
        server.engine, server.token2wav = engine, token2wav
        yield server


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


async def session(server, **kw) -> Client:
    client = await Client.connect(server.ws, **kw)
    first = await client.recv()
    assert first["type"] == "session.created"
    return client


def audio_bytes(events: list[dict], kind: str = "response.output_audio.delta") -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == kind)


async def spoken_turn(client: Client, pcm: bytes) -> list[dict]:
    await client.append_audio(pcm)
    return await client.until("response.done")


def prompt_text(request) -> str:
    """The text of a prompt as the model reads it (token and audio segments left out)."""
    return "".join(getattr(segment, "text", "") for segment in request.prompt)


def without_deltas(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        if name.endswith(".delta") and out and out[-1] == "*deltas":
            continue
        out.append("*deltas" if name.endswith(".delta") else name)
    return out


async def test_spoken_turn_event_order_and_audio_length(tokenizer, hello_pcm):
    with serving(tokenizer) as server:
        client = await session(server)
        await client.send({"type": "session.update", "session": {"type": "realtime"}})
        assert (await client.recv())["type"] == "session.updated"
        events = await spoken_turn(client, hello_pcm)
        assert without_deltas(types(events)) == [
            "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done",
            "response.created", "response.output_item.added", "conversation.item.added",
            "response.content_part.added", "*deltas", "response.output_audio.done",
            "response.output_audio_transcript.done", "response.content_part.done",
            "response.output_item.done", "conversation.item.done", "response.done",
        ]
        done = events[-1]["response"]
        assert done["status"] == "completed"
        codes = done["usage"]["output_token_details"]["audio_tokens"]
        assert codes == 60
        audio = audio_bytes(events)
        assert len(audio) == codes * 960 * 2
        sizes = [len(base64.b64decode(e["delta"])) // 2 for e in events
                 if e["type"] == "response.output_audio.delta"]
        assert all(960 <= s <= 4800 for s in sizes[:-1])  # 40-200 ms per delta
        transcript = "".join(e["delta"] for e in events
                             if e["type"] == "response.output_audio_transcript.delta")
        assert transcript == "Hello there friend"
        # The engine got the committed audio (with prefix padding) and a spoken-reply prompt.
        request = server.engine.requests[-1]
        assert request.prompt[-1].text.endswith("<tts_start>")
        await client.close()


async def test_ids_are_unique_and_errors_echo_event_id(tokenizer):
    with serving(tokenizer) as server:
        client = await session(server)
        await client.send({"type": "input_audio_buffer.commit", "event_id": "evt_1"})
        error = await client.recv()
        assert error["type"] == "error"
        assert error["error"]["code"] == "input_audio_buffer_commit_empty"
        assert error["error"]["event_id"] == "evt_1"
        ids = [e["event_id"] for e in client.events]
        assert len(set(ids)) == len(ids)
        await client.close()


async def test_manual_mode_commit_then_response(tokenizer, hello_pcm):
    with serving(tokenizer) as server:
        client = await session(server)
        await client.send({"type": "session.update",
                           "session": {"type": "realtime",
                                       "audio": {"input": {"turn_detection": None}}}})
        updated = await client.recv()
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        await client.append_audio(hello_pcm)
        await client.send({"type": "input_audio_buffer.commit"})
        events = await client.until("conversation.item.done")
        assert types(events) == ["input_audio_buffer.committed", "conversation.item.added",
                                 "conversation.item.done"]  # no VAD events in manual mode
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        assert events[-1]["response"]["status"] == "completed"
        prompt = server.engine.requests[-1].prompt
        from engine.types import AudioSegment

        audio = [s for s in prompt if isinstance(s, AudioSegment)]
        # Everything appended (24 kHz) arrives at 16 kHz, within the resampler's rounding.
        assert abs(sum(a.samples.size for a in audio) - len(hello_pcm) // 2 * 2 // 3) <= 2
        await client.send({"type": "input_audio_buffer.clear"})
        assert (await client.recv())["type"] == "input_audio_buffer.cleared"
        await client.close()


async def test_text_item_and_text_only_response(tokenizer):
    with serving(tokenizer) as server:
        client = await session(server)
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What is the capital of France?"}]}})
        added = await client.recv()
        assert added["type"] == "conversation.item.added"
        assert added["item"]["content"][0]["text"] == "What is the capital of France?"
        assert (await client.recv())["type"] == "conversation.item.done"
        await client.send({"type": "response.create",
                           "response": {"output_modalities": ["text"],
                                        "metadata": {"topic": "geo"}}})
        events = await client.until("response.done")
        names = types(events)
        assert "response.output_text.delta" in names
        assert not any("audio" in n for n in names)
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text == "hello world"
        assert events[0]["response"]["metadata"] == {"topic": "geo"}
        assert events[-1]["response"]["metadata"] == {"topic": "geo"}
        prompt = server.engine.requests[-1].prompt
        assert prompt[-1].text.endswith("<|BOT|>assistant\n")  # no <tts_start>
        assert "<|BOT|>human\nWhat is the capital of France?<|EOT|>" in prompt_text(
            server.engine.requests[-1])
        await client.close()


async def test_barge_in_cancels_and_truncates_to_what_was_heard(tokenizer, hello_pcm):
    # A long, slow reply so that the second utterance lands while it streams.
    engine = make_engine(tokenizer, n_codes=2000, step_s=0.004)
    with serving(tokenizer, engine=engine) as server:
        client = await session(server)
        await client.append_audio(hello_pcm)
        first = await client.until("response.output_audio.delta")
        response_id = first[-1]["response_id"]
        item_id = first[-1]["item_id"]
        await client.append_audio(pcm16(utterance("stop, wait a moment", tail_s=0.0)))
        events = await client.until("response.done")
        done = events[-1]["response"]
        assert done["id"] == response_id
        assert done["status"] == "cancelled"
        assert done["status_details"]["reason"] == "turn_detected"
        started = types(events).index("input_audio_buffer.speech_started")
        assert not any(e["type"] == "response.output_audio.delta"
                       for e in events[started + 1:])
        received = audio_bytes(first + events)
        truncated = await client.until("conversation.item.truncated")
        assert truncated[-1]["item_id"] == item_id
        heard_ms = truncated[-1]["audio_end_ms"]
        assert 0 <= heard_ms <= len(received) // 2 * 1000 // 24000
        await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
        item = (await client.until("conversation.item.retrieved"))[-1]["item"]
        kept = base64.b64decode(item["content"][0]["audio"])
        assert kept == received[: heard_ms * 24 * 2]
        assert engine.aborted and engine.aborted[0] == response_id
        assert server.token2wav.streams[0].cancelled
        # The model's history keeps only the heard ids: 25 codes per second.
        engine.replies = [ta4_reply(engine.vocab, 8)]
        await client.append_audio(bytes(24000 * 2))  # 1 s of silence ends the second turn
        await client.until("response.done")
        replay = [s for s in engine.requests[-1].prompt if hasattr(s, "ids")]
        codes = sum(1 for i in replay[0].ids if tokenizer[1].is_speech(i))
        assert codes == heard_ms * 25 // 1000
        await client.close()


async def test_client_truncate_sets_the_heard_point(tokenizer, hello_pcm):
    engine = make_engine(tokenizer, n_codes=100)
    with serving(tokenizer, engine=engine) as server:
        client = await session(server)
        events = await spoken_turn(client, hello_pcm)
        item_id = events[-1]["response"]["output"][0]["id"]
        received = audio_bytes(events)
        await client.send({"type": "conversation.item.truncate", "item_id": item_id,
                           "content_index": 0, "audio_end_ms": 1500})
        truncated = await client.recv()
        assert truncated == {**truncated, "type": "conversation.item.truncated",
                             "audio_end_ms": 1500}
        await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
        item = (await client.recv())["item"]
        assert base64.b64decode(item["content"][0]["audio"]) == received[: 1500 * 48]
        # Transcript in proportion: 37 of 100 codes kept.
        assert item["content"][0]["transcript"] == "Hello there friend"[: 18 * 37 // 100]
        await client.send({"type": "conversation.item.truncate", "item_id": item_id,
                           "content_index": 0, "audio_end_ms": 4001})
        error = await client.recv()
        assert error["error"]["code"] == "item_truncate_invalid_audio_end_ms"
        await client.close()


async def test_response_cancel_and_benign_races(tokenizer):
    engine = make_engine(tokenizer, n_codes=2000, step_s=0.004)
    with serving(tokenizer, engine=engine) as server:
        client = await session(server)
        await client.send({"type": "response.cancel", "event_id": "c0"})
        error = await client.recv()
        assert error["error"]["code"] == "response_cancel_not_active"
        assert error["error"]["message"].startswith("Cancellation failed:")
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
        await client.until("conversation.item.done")
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        await client.send({"type": "response.create"})
        error = await client.until("error")
        assert error[-1]["error"]["code"] == "conversation_already_has_active_response"
        await client.send({"type": "response.cancel"})
        events = await client.until("response.done")
        assert events[-1]["response"]["status"] == "cancelled"
        assert events[-1]["response"]["status_details"]["reason"] == "client_cancelled"
        await client.send({"type": "response.cancel"})
        error = await client.until("error")
        assert error[-1]["error"]["code"] == "response_cancel_not_active"
        await client.close()


def tool_reply(tokenizer, name: str, arguments: str, speech: bool = True) -> list[int]:
    tok, sp = tokenizer
    body = tok.encode(f"<tool_call>function\n{name}\n{arguments}</tool_call>")
    head = [sp.tts_pad, sp.audio_base + 5, sp.audio_base + 6, sp.audio_base + 7,
            sp.audio_base + 8, sp.tts_end] if speech else []
    return [*head, *body, sp.eot]


WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


async def test_function_tool_round_trip(tokenizer):
    engine = make_engine(tokenizer)
    engine.replies = [tool_reply(tokenizer, "get_weather", '{"city": "Paris"}'),
                      ta4_reply(engine.vocab, 8)]
    with serving(tokenizer, engine=engine) as server:
        client = await session(server)
        await client.send({"type": "session.update",
                           "session": {"type": "realtime", "tools": [WEATHER_TOOL]}})
        await client.until("session.updated")
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Weather in Paris?"}]}})
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        names = types(events)
        assert "response.function_call_arguments.delta" in names
        args_done = events[names.index("response.function_call_arguments.done")]
        assert args_done["name"] == "get_weather"
        assert json.loads(args_done["arguments"]) == {"city": "Paris"}
        output = events[-1]["response"]["output"]
        call = next(i for i in output if i["type"] == "function_call")
        assert call["call_id"] == args_done["call_id"]
        schemas = '<|BOT|>tool_json_schemas\n[{"type": "function", "function": {"name": '
        assert schemas + '"get_weather"' in prompt_text(engine.requests[-1])
        await client.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": call["call_id"],
            "output": '{"temperature_c": 21}'}})
        added = await client.until("conversation.item.done")
        assert added[0]["item"]["type"] == "function_call_output"
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        assert events[-1]["response"]["status"] == "completed"
        assert '<|BOT|>input\n{"temperature_c": 21}<|EOT|>' in prompt_text(engine.requests[-1])
        await client.close()


async def test_builtin_datetime_tool_runs_on_the_server(tokenizer):
    engine = make_engine(tokenizer)
    engine.replies = [tool_reply(tokenizer, "get_current_datetime", "{}"),
                      ta4_reply(engine.vocab, 8)]
    with serving(tokenizer, engine=engine, server_tools=["datetime"]) as server:
        client = await session(server)
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What day is it?"}]}})
        await client.send({"type": "response.create"})
        await client.until("response.done")
        events = await client.until("response.done")  # the follow-up made by the server
        outputs = [e for e in client.events if e["type"] == "conversation.item.added"
                   and e["item"]["type"] == "function_call_output"]
        assert len(outputs) == 1
        assert "weekday" in json.loads(outputs[0]["item"]["output"])
        assert events[-1]["response"]["status"] == "completed"
        text = prompt_text(engine.requests[-1])
        assert "<|BOT|>input\n{" in text and '"weekday"' in text.split("<|BOT|>input\n")[1]
        await client.close()


async def test_g711_input_and_output(tokenizer, hello_pcm):
    from server.audio_codecs import encode_audio
    from server.protocol.formats import AudioFormat
    from server.resample import resample

    audio24 = np.frombuffer(hello_pcm, "<i2").astype(np.float32) / 32768
    ulaw = encode_audio(resample(audio24, 24000, 8000), AudioFormat.PCMU)
    with serving(tokenizer) as server:
        client = await session(server)
        await client.send({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"format": {"type": "audio/pcmu"}},
            "output": {"format": {"type": "audio/pcmu"}}}}})
        updated = await client.recv()
        assert updated["session"]["audio"]["input"]["format"]["type"] == "audio/pcmu"
        events = await spoken_turn(client, ulaw)
        assert "input_audio_buffer.speech_started" in types(events)
        audio = audio_bytes(events)
        codes = events[-1]["response"]["usage"]["output_token_details"]["audio_tokens"]
        # One byte per 8 kHz sample: a third of the 24 kHz samples (resampler rounding aside).
        assert len(audio) == codes * 960 // 3
        await client.close()


async def test_input_transcription(tokenizer, hello_pcm):
    with serving(tokenizer) as server:
        client = await session(server)
        await client.send({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"transcription": {"model": "step-audio-2-mini"}}}}})
        await client.until("session.updated")
        await client.append_audio(hello_pcm)
        events = await client.until("conversation.item.input_audio_transcription.completed")
        committed = next(e for e in events if e["type"] == "input_audio_buffer.committed")
        done = events[-1]
        assert done["item_id"] == committed["item_id"]
        assert done["transcript"] == "hello world"
        asr = next(r for r in server.engine.requests if r.request_id.startswith("asr_"))
        assert prompt_text(asr).startswith("<|BOT|>system\n请记录下你所听到的语音内容。<|EOT|>")
        assert asr.sampling.temperature == pytest.approx(0.1)
        await client.close()


async def test_voices_endpoints_and_session_voice(tokenizer):
    with serving(tokenizer) as server:
        async with httpx.AsyncClient(base_url=server.http) as http:
            listing = (await http.get("/v1/voices")).json()
            assert listing["default"] == "default"
            wav = b"RIFF" + bytes(100)
            reply = await http.post("/v1/voices", data={"name": "anna"},
                                    files={"file": ("anna.wav", wav, "audio/wav")})
            assert reply.status_code == 201
            assert "anna" in [v["id"] for v in reply.json()["data"]]
            bad = await http.post("/v1/voices", data={"name": "bob"},
                                  files={"file": ("bob.wav", b"not a wav", "audio/wav")})
            assert bad.status_code == 400 and "WAV" in bad.json()["detail"]
            info = (await http.get("/v1/info")).json()
            assert info["model"] == "step-audio-2-mini" and "anna" in info["voices"]
            assert info["token2wav_precision"] == "fp32"  # the exact default
        client = await session(server)
        await client.send({"type": "session.update",
                           "session": {"type": "realtime", "audio": {"output": {"voice": "anna"}}}})
        assert (await client.recv())["session"]["audio"]["output"]["voice"] == "anna"
        await client.send({"type": "session.update", "event_id": "v1",
                           "session": {"type": "realtime",
                                       "audio": {"output": {"voice": "nobody"}},
                                       "instructions": "changed"}})
        error = await client.recv()
        assert error["error"]["code"] == "unknown_voice" and error["error"]["event_id"] == "v1"
        alloy = {"type": "realtime", "audio": {"output": {"voice": "alloy"}}}
        await client.send({"type": "session.update", "session": alloy})
        session_now = (await client.recv())["session"]
        assert session_now["audio"]["output"]["voice"] == "default"  # OpenAI name -> default
        assert session_now["instructions"] != "changed"  # the refused update changed nothing
        await client.close()


async def test_idle_timeout_triggers_a_response(tokenizer):
    with serving(tokenizer) as server:
        client = await session(server)
        await client.send({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 1000}}}}})
        await client.until("session.updated")
        await client.append_audio(bytes(24000 * 2 * 2))  # 2 s of silence
        events = await client.until("response.done")
        assert types(events)[0] == "input_audio_buffer.timeout_triggered"
        assert events[0]["audio_end_ms"] - events[0]["audio_start_ms"] >= 1000
        await client.close()


async def test_prompt_budget_drops_oldest_turns_not_the_clients_view(tokenizer):
    with serving(tokenizer, max_prompt_tokens=256) as server:
        client = await session(server)
        for n in range(12):
            await client.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": f"turn{n} " + "x" * 90}]}})
            await client.until("conversation.item.done")
        await client.send({"type": "response.create",
                           "response": {"output_modalities": ["text"]}})
        await client.until("response.done")
        text = prompt_text(server.engine.requests[-1])
        assert "turn11 " in text and "turn0 " not in text
        added = [e for e in client.events if e["type"] == "conversation.item.added"]
        first_id = added[0]["item"]["id"]
        await client.send({"type": "conversation.item.retrieve", "item_id": first_id})
        assert (await client.recv())["item"]["content"][0]["text"].startswith("turn0 ")
        await client.close()


async def test_beta_dialect_names(tokenizer, hello_pcm):
    with serving(tokenizer) as server:
        client = await Client.connect(server.ws, headers={"OpenAI-Beta": "realtime=v1"})
        assert (await client.recv())["type"] == "session.created"
        assert (await client.recv())["type"] == "conversation.created"
        await client.send({"type": "session.update", "session": {"modalities": ["text", "audio"],
                                                                 "input_audio_format": "pcm16"}})
        assert "modalities" in (await client.recv())["session"]
        events = await spoken_turn(client, hello_pcm)
        names = set(types(events))
        assert {"response.audio.delta", "response.audio_transcript.delta",
                "conversation.item.created"} <= names
        assert not {n for n in names if "output_audio" in n or n == "conversation.item.added"}
        await client.close()


async def test_graceful_shutdown_closes_sessions_with_1001(tokenizer):
    engine = make_engine(tokenizer, n_codes=3000, step_s=0.004)
    with serving(tokenizer, engine=engine) as server:
        client = await session(server)
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        server.server.should_exit = True
        events = await client.until("response.done")
        assert events[-1]["response"]["status"] == "cancelled"
        import websockets

        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await client.recv()
        assert closed.value.rcvd.code == 1001
        assert engine.aborted


async def test_health_ready_metrics_info(tokenizer, hello_pcm):
    with serving(tokenizer) as server:
        client = await session(server)
        await spoken_turn(client, hello_pcm)
        async with httpx.AsyncClient(base_url=server.http) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            assert (await http.get("/readyz")).status_code == 200
            metrics = (await http.get("/metrics")).text
            assert "stepaudio2_open_sessions 1.0" in metrics
            assert 'stepaudio2_responses_total{status="completed"} 1.0' in metrics
            assert "stepaudio2_time_to_first_audio_seconds_count 1.0" in metrics
            assert "stepaudio2_token2wav_queue_depth" in metrics
            info = (await http.get("/v1/info")).json()
            assert info["test_checkpoint"] is False and info["default_voice"] == "default"
        await client.close()


async def test_dead_engine_fails_the_response_not_the_session(tokenizer, hello_pcm):
    engine = make_engine(tokenizer)
    engine.fail = True
    with serving(tokenizer, engine=engine) as server:
        client = await session(server)
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        errors = [e for e in events if e["type"] == "error"]
        assert errors and errors[0]["error"]["code"] == "engine_error"
        assert events[-1]["response"]["status"] == "failed"
        engine.fail = False  # the engine is back: the same session goes on
        events = await spoken_turn(client, hello_pcm)
        assert events[-1]["response"]["status"] == "completed"
        await client.close()


async def test_input_buffer_limit_in_manual_mode(tokenizer):
    with serving(tokenizer, max_input_buffer_s=1.0) as server:
        client = await session(server)
        await client.send({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"turn_detection": None}}}})
        await client.until("session.updated")
        await client.append_audio(bytes(24000 * 2), chunk_bytes=24000)  # 1 s: fits
        await client.append_audio(bytes(4800))  # 100 ms more: refused, said so
        error = await client.recv()
        assert error["error"]["code"] == "buffer_too_large"
        await client.send({"type": "input_audio_buffer.commit"})
        committed = await client.until("conversation.item.done")
        assert committed[0]["type"] == "input_audio_buffer.committed"
        await client.close()


async def test_idle_session_is_closed(tokenizer):
    import websockets

    with serving(tokenizer, session_idle_timeout_s=0.5) as server:
        client = await session(server)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await client.recv(timeout=10)
        assert closed.value.rcvd.code == 1000 and closed.value.rcvd.reason == "idle timeout"


async def test_turns_back_to_back_after_a_barge_in_still_get_a_reply(tokenizer, hello_pcm):
    # Speech that stops and starts again inside one append: a reply created and interrupted
    # before it ever ran must not block the next turn's reply.
    engine = make_engine(tokenizer, n_codes=2000, step_s=0.004)
    with serving(tokenizer, engine=engine) as server:
        client = await session(server)
        await client.append_audio(hello_pcm)
        await client.until("response.output_audio.delta")
        await client.append_audio(pcm16(utterance("no, stop", tail_s=0.0)))
        assert (await client.until("response.done"))[-1]["response"]["status"] == "cancelled"
        engine.replies = [ta4_reply(engine.vocab, 8)]
        await client.append_audio(hello_pcm)
        events = await client.until("response.done")
        while events[-1]["response"]["status"] == "cancelled":
            events = await client.until("response.done")
        assert events[-1]["response"]["status"] == "completed"
        await client.close()


async def test_function_call_item_with_bad_arguments_is_refused(tokenizer):
    with serving(tokenizer) as server:
        client = await session(server)
        await client.send({"type": "conversation.item.create", "event_id": "f1", "item": {
            "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{oops"}})
        error = await client.recv()
        assert error["error"]["code"] == "invalid_event"
        assert (error["error"]["param"], error["error"]["event_id"]) == ("item.arguments", "f1")
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        assert events[-1]["response"]["status"] == "completed"
        await client.close()


async def test_reply_stays_after_the_turn_it_answered(tokenizer, hello_pcm):
    engine = make_engine(tokenizer, n_codes=400, step_s=0.004)
    with serving(tokenizer, engine=engine) as server:
        client = await session(server)
        await client.append_audio(hello_pcm)
        first = await client.until("response.output_audio.delta")
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "added meanwhile"}]}})
        await client.until("response.done")
        engine.replies = [ta4_reply(engine.vocab, 8)]
        await client.send({"type": "response.create"})
        await client.until("response.done")
        prompt = engine.requests[-1].prompt
        replay = next(i for i, s in enumerate(prompt) if hasattr(s, "ids"))
        text = next(i for i, s in enumerate(prompt) if "added meanwhile" in getattr(s, "text", ""))
        assert replay < text
        assert first[-1]["item_id"] in {e["item"]["id"] for e in client.events
                                        if e["type"] == "conversation.item.done"}
        await client.close()


async def test_sampling_defaults_and_per_session_overrides(tokenizer):
    with serving(tokenizer) as server:
        client = await session(server)
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
        await client.send({"type": "response.create"})
        await client.until("response.done")
        sampling = server.engine.requests[-1].sampling
        assert (sampling.temperature, sampling.top_p, sampling.repetition_penalty) == (
            0.7, 0.9, 1.05)  # spec e.8
        await client.send({"type": "session.update", "session": {
            "type": "realtime", "temperature": 0.3, "max_output_tokens": 12,
            "x_stepaudio2": {"top_p": 0.5, "repetition_penalty": 1.2}}})
        await client.until("session.updated")
        await client.send({"type": "response.create"})
        await client.until("response.done")
        sampling = server.engine.requests[-1].sampling
        assert (sampling.temperature, sampling.top_p, sampling.repetition_penalty,
                sampling.max_tokens) == (0.3, 0.5, 1.2, 12)
        await client.close()


async def test_client_leaving_mid_reply_frees_the_engine_and_token2wav(tokenizer, hello_pcm):
    import asyncio

    engine = make_engine(tokenizer, n_codes=3000, step_s=0.004)
    with serving(tokenizer, engine=engine) as server:
        client = await session(server)
        await client.append_audio(hello_pcm)
        delta = (await client.until("response.output_audio.delta"))[-1]
        await client.close()
        async with httpx.AsyncClient(base_url=server.http) as http:
            for _ in range(100):
                metrics = (await http.get("/metrics")).text
                if "stepaudio2_open_sessions 0.0" in metrics and not engine.in_flight:
                    break
                await asyncio.sleep(0.05)
        assert "stepaudio2_open_sessions 0.0" in metrics
        assert delta["response_id"] in engine.aborted and not engine.in_flight
        assert server.token2wav.streams[0].cancelled
