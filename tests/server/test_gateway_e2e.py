"""End to end on a real `serve` process with the tiny checkpoint (real engine and token2wav)."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
import websockets

from tests.server.fakes import Client, ServerProcess, pcm16, utterance

# The official openai SDK (GA and beta), barge-in, manual mode, text, G.711, tools, voices,
# transcription, 20 concurrent sessions, and bad input one case per test (the documented error or
# HTTP status, then the session still completes a turn).
KEY = "test-key-123"
MAX_SESSIONS = 21  # the 20-session test fits; the limit test fills the rest
MAX_EVENT_BYTES = 256 * 1024
MAX_TOKENS = 8  # keeps the random model's replies short


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    with ServerProcess(tiny_checkpoint, "--api-key", KEY, "--max-sessions", str(MAX_SESSIONS),
                       "--max-event-bytes", str(MAX_EVENT_BYTES)) as proc:
        yield proc


@pytest.fixture(scope="module")
def turn_pcm() -> bytes:
    return pcm16(utterance("hello there"))


AUTH = {"Authorization": f"Bearer {KEY}"}


async def connect(server) -> Client:
    client = await Client.connect(server.ws, headers=AUTH)
    assert (await client.recv())["type"] == "session.created"
    await client.send({"type": "session.update",
                       "session": {"type": "realtime", "max_output_tokens": MAX_TOKENS}})
    assert (await client.recv())["type"] == "session.updated"
    return client


async def expect_error(client: Client, code: str, event_id: str | None = None) -> dict:
    event = await client.recv()
    assert event["type"] == "error", event
    assert event["error"]["code"] == code, event
    if event_id is not None:
        assert event["error"]["event_id"] == event_id
    return event["error"]


async def completes_a_turn(client: Client, pcm: bytes) -> None:
    """The session still works: a spoken turn gets a finished response."""
    await client.append_audio(pcm)
    events = await client.until("response.done", timeout=120)
    kinds = [e["type"] for e in events]
    assert "input_audio_buffer.committed" in kinds
    assert "error" not in kinds
    assert events[-1]["response"]["status"] in ("completed", "incomplete")
    await client.close()


async def test_not_json(server, turn_pcm):
    client = await connect(server)
    await client.send("{this is not json")
    await expect_error(client, "invalid_json")
    await completes_a_turn(client, turn_pcm)


async def test_unknown_event_type(server, turn_pcm):
    client = await connect(server)
    await client.send({"type": "session.dance", "event_id": "e1"})
    error = await expect_error(client, "unknown_event_type", "e1")
    assert error["param"] == "type"
    await completes_a_turn(client, turn_pcm)


async def test_missing_field(server, turn_pcm):
    client = await connect(server)
    await client.send({"type": "input_audio_buffer.append", "event_id": "e2"})
    error = await expect_error(client, "invalid_event", "e2")
    assert error["param"] == "audio"
    await completes_a_turn(client, turn_pcm)


async def test_mistyped_field(server, turn_pcm):
    client = await connect(server)
    await client.send({"type": "conversation.item.truncate", "item_id": "x", "content_index": 0,
                       "audio_end_ms": "soon", "event_id": "e3"})
    error = await expect_error(client, "invalid_event", "e3")
    assert error["param"] == "audio_end_ms"
    await completes_a_turn(client, turn_pcm)


async def test_bad_base64(server, turn_pcm):
    client = await connect(server)
    await client.send({"type": "input_audio_buffer.append", "audio": "%%%not base64%%%",
                       "event_id": "e4"})
    await expect_error(client, "invalid_base64", "e4")
    await completes_a_turn(client, turn_pcm)


async def test_odd_byte_count(server, turn_pcm):
    client = await connect(server)
    await client.send({"type": "input_audio_buffer.append",
                       "audio": base64.b64encode(b"\x01\x02\x03").decode(), "event_id": "e5"})
    await expect_error(client, "invalid_audio_length", "e5")
    await completes_a_turn(client, turn_pcm)


async def test_event_over_size_limit(server, turn_pcm):
    client = await connect(server)
    audio = base64.b64encode(bytes(MAX_EVENT_BYTES)).decode()
    await client.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
    await expect_error(client, "event_too_large")
    await completes_a_turn(client, turn_pcm)


async def test_commit_on_empty_buffer(server, turn_pcm):
    client = await connect(server)
    await client.send({"type": "input_audio_buffer.commit", "event_id": "e6"})
    await expect_error(client, "input_audio_buffer_commit_empty", "e6")
    await completes_a_turn(client, turn_pcm)


async def test_response_create_while_one_is_active(server, turn_pcm):
    client = await connect(server)
    await client.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi!"}]}})
    await client.send({"type": "response.create"})
    await client.send({"type": "response.create", "event_id": "e7"})
    events = await client.until("response.done", timeout=120)
    errors = [e for e in events if e["type"] == "error"]
    assert [e["error"]["code"] for e in errors] == ["conversation_already_has_active_response"]
    assert errors[0]["error"]["event_id"] == "e7"
    await completes_a_turn(client, turn_pcm)


async def test_cancel_with_none_active(server, turn_pcm):
    client = await connect(server)
    await client.send({"type": "response.cancel", "event_id": "e8"})
    error = await expect_error(client, "response_cancel_not_active", "e8")
    assert error["message"].startswith("Cancellation failed:")
    await completes_a_turn(client, turn_pcm)


async def test_truncate_past_the_audio(server, turn_pcm):
    client = await connect(server)
    for _ in range(4):  # the random model may stop before saying anything
        await client.append_audio(turn_pcm)
        events = await client.until("response.done", timeout=120)
        output = events[-1]["response"]["output"]
        message = next((i for i in output if i["type"] == "message"), None)
        if message is not None:
            break
    assert message is not None
    sent = sum(len(base64.b64decode(e["delta"])) for e in events
               if e["type"] == "response.output_audio.delta") // 48
    await client.send({"type": "conversation.item.truncate", "item_id": message["id"],
                       "content_index": 0, "audio_end_ms": sent + 1000, "event_id": "e9"})
    await expect_error(client, "item_truncate_invalid_audio_end_ms", "e9")
    await completes_a_turn(client, turn_pcm)


async def test_unknown_voice(server, turn_pcm):
    client = await connect(server)
    await client.send({"type": "session.update", "event_id": "e10",
                       "session": {"type": "realtime", "audio": {"output": {"voice": "zorro"}}}})
    await expect_error(client, "unknown_voice", "e10")
    await completes_a_turn(client, turn_pcm)


async def test_missing_api_key_gets_401(server):
    with pytest.raises(websockets.InvalidStatus) as refused:
        await Client.connect(server.ws)
    assert refused.value.response.status_code == 401


async def test_wrong_api_key_gets_403(server):
    with pytest.raises(websockets.InvalidStatus) as refused:
        await Client.connect(server.ws, headers={"Authorization": "Bearer nope"})
    assert refused.value.response.status_code == 403


async def test_browser_subprotocol_key_is_accepted(server, turn_pcm):
    client = await Client.connect(
        server.ws, subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"])
    assert client.ws.subprotocol == "realtime"
    assert (await client.recv())["type"] == "session.created"
    await client.send({"type": "session.update",
                       "session": {"type": "realtime", "max_output_tokens": MAX_TOKENS}})
    assert (await client.recv())["type"] == "session.updated"
    await completes_a_turn(client, turn_pcm)


async def test_too_many_sessions_gets_503(server, turn_pcm):
    clients = [await connect(server) for _ in range(MAX_SESSIONS)]
    with pytest.raises(websockets.InvalidStatus) as refused:
        await Client.connect(server.ws, headers=AUTH)
    assert refused.value.response.status_code == 503
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{server.http}/metrics")).text
    assert f"stepaudio2_open_sessions {float(MAX_SESSIONS)}" in metrics
    for client in clients[1:]:
        await client.close()
    await completes_a_turn(clients[0], turn_pcm)


# --- must show: whole turns with real clients ---------------------------------------------------


def chunks(pcm: bytes, ms: int = 40, rate: int = 24_000):
    step = rate * ms // 1000 * 2
    for start in range(0, len(pcm), step):
        yield base64.b64encode(pcm[start:start + step]).decode()


def check_audio_matches_codes(deltas: list[bytes], done_usage) -> int:
    """The audio decodes to 24 kHz int16 whose length is 960 samples per generated code."""
    import numpy as np

    audio = np.frombuffer(b"".join(deltas), dtype="<i2")
    codes = done_usage.output_token_details.audio_tokens
    assert codes > 0
    assert audio.size == codes * 960
    return codes


# The random model may end a reply on its own after a token or two (no speech at all); tests
# that need speech retry a turn a few times, in the same session, until a reply carries codes.
ATTEMPTS = 4


async def sdk_turn(conn, pcm: bytes, chunk_ms: int, audio_delta: str) -> tuple[list, list, object]:
    for piece in chunks(pcm, chunk_ms):
        await conn.input_audio_buffer.append(audio=piece)
    kinds, deltas = [], []
    async for event in conn:
        kinds.append(event.type)
        if event.type == audio_delta:
            deltas.append(base64.b64decode(event.delta))
        elif event.type == "error":
            raise AssertionError(event.error)
        elif event.type == "response.done":
            return kinds, deltas, event.response
    raise AssertionError("connection ended")


async def test_openai_sdk_ga_spoken_turn(server, turn_pcm):
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{server.http}/v1", api_key=KEY)
    async with client.realtime.connect(model="step-audio-2-mini") as conn:
        await conn.session.update(session={
            "type": "realtime", "output_modalities": ["audio"], "max_output_tokens": MAX_TOKENS,
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                "turn_detection": {"type": "server_vad"}},
                      "output": {"format": {"type": "audio/pcm", "rate": 24000}}}})
        all_kinds = []
        for _ in range(ATTEMPTS):
            kinds, deltas, done = await sdk_turn(conn, turn_pcm, 40, "response.output_audio.delta")
            all_kinds += kinds
            if done.usage.output_token_details.audio_tokens:
                break
    order = [k for k in all_kinds if k in (
        "session.created", "session.updated", "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped", "input_audio_buffer.committed", "response.created",
        "response.done")]
    assert order[:7] == ["session.created", "session.updated",
                         "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                         "input_audio_buffer.committed", "response.created", "response.done"]
    assert "response.output_audio.delta" in kinds
    assert "response.output_audio_transcript.done" in kinds
    assert done.status in ("completed", "incomplete")
    check_audio_matches_codes(deltas, done.usage)
    message = next(i for i in done.output if i.type == "message")
    assert message.content[0].type == "output_audio"


async def test_openai_sdk_beta_spoken_turn(server, turn_pcm):
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key=KEY, websocket_base_url=f"ws://127.0.0.1:{server.port}/v1")
    async with client.beta.realtime.connect(model="step-audio-2-mini") as conn:
        await conn.session.update(session={
            "modalities": ["text", "audio"], "input_audio_format": "pcm16",
            "output_audio_format": "pcm16", "turn_detection": {"type": "server_vad"},
            "max_response_output_tokens": MAX_TOKENS})
        all_kinds = []
        for _ in range(ATTEMPTS):
            kinds, deltas, done = await sdk_turn(conn, turn_pcm, 100, "response.audio.delta")
            all_kinds += kinds
            if done.usage.output_token_details.audio_tokens:
                break
    assert all_kinds[:2] == ["session.created", "conversation.created"]
    for name in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                 "input_audio_buffer.committed", "conversation.item.created",
                 "response.audio_transcript.done", "response.audio.done", "response.audio.delta"):
        assert name in all_kinds
    assert not any("output_audio" in k for k in all_kinds)
    check_audio_matches_codes(deltas, done.usage)


def audio_of(events: list[dict]) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events
                    if e["type"] == "response.output_audio.delta")


async def interrupted_reply(server, turn_pcm: bytes) -> tuple[Client, list, list] | None:
    """A session whose first reply streams audio and is then interrupted by speech; None when
    the random model ended that reply on its own first."""
    client = await Client.connect(server.ws, headers=AUTH)
    await client.recv()
    await client.send({"type": "session.update", "session": {
        "type": "realtime", "max_output_tokens": 400}})  # long enough to be interrupted
    await client.recv()
    await client.append_audio(turn_pcm)
    first = []
    while not first or first[-1]["type"] not in ("response.output_audio.delta", "response.done"):
        first.append(await client.recv(timeout=120))
    if first[-1]["type"] == "response.done":
        await client.close()
        return None
    await client.append_audio(pcm16(utterance("no, stop", tail_s=0.0)))
    events = await client.until("response.done", timeout=120)
    if events[-1]["response"]["status"] != "cancelled":
        await client.close()
        return None
    return client, first, events


async def test_barge_in_cancels_the_reply_and_keeps_what_was_heard(server, turn_pcm):
    for _ in range(ATTEMPTS):
        result = await interrupted_reply(server, turn_pcm)
        if result is not None:
            break
    assert result is not None, "no reply lasted long enough to be interrupted"
    client, first, events = result
    item_id, response_id = first[-1]["item_id"], first[-1]["response_id"]
    done = events[-1]["response"]
    assert done["id"] == response_id
    assert (done["status"], done["status_details"]["reason"]) == ("cancelled", "turn_detected")
    started = [e["type"] for e in events].index("input_audio_buffer.speech_started")
    assert not [e for e in events[started:] if e["type"] == "response.output_audio.delta"]
    heard = (await client.until("conversation.item.truncated"))[-1]
    assert heard["item_id"] == item_id
    received = audio_of(first + events)
    assert heard["audio_end_ms"] <= len(received) // 48
    await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
    item = (await client.until("conversation.item.retrieved"))[-1]["item"]
    assert base64.b64decode(item["content"][0]["audio"]) == received[: heard["audio_end_ms"] * 48]
    # The client's own truncate point wins, measured on the audio sent.
    point = min(len(received) // 48, 200)
    await client.send({"type": "conversation.item.truncate", "item_id": item_id,
                       "content_index": 0, "audio_end_ms": point})
    assert (await client.until("conversation.item.truncated"))[-1]["audio_end_ms"] == point
    await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
    item = (await client.until("conversation.item.retrieved"))[-1]["item"]
    assert base64.b64decode(item["content"][0]["audio"]) == received[: point * 48]
    await client.send({"type": "session.update", "session": {
        "type": "realtime", "max_output_tokens": MAX_TOKENS}})
    # The interrupting "no, stop" had no trailing silence, so its own turn is still open: end it
    # and let its reply finish, or the next turn's speech would barge in on that reply.
    await client.append_audio(bytes(2 * 24_000))  # 1 s of silence
    await client.until("response.done", timeout=120)
    await completes_a_turn(client, turn_pcm)


async def test_manual_mode_text_items_and_text_only_reply(server, turn_pcm):
    client = await connect(server)
    await client.send({"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"turn_detection": None}}}})
    await client.until("session.updated")
    await client.append_audio(turn_pcm)
    await client.send({"type": "input_audio_buffer.commit"})
    committed = await client.until("conversation.item.done")
    assert committed[0]["type"] == "input_audio_buffer.committed"
    for _ in range(ATTEMPTS):  # the random model may stop before any speech
        await client.send({"type": "response.create"})
        events = await client.until("response.done", timeout=120)
        if events[-1]["response"]["usage"]["output_token_details"]["audio_tokens"]:
            break
    assert "response.output_audio.delta" in [e["type"] for e in events]
    await client.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "Say something short."}]}})
    await client.until("conversation.item.done")
    await client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    events = await client.until("response.done", timeout=120)
    kinds = [e["type"] for e in events]
    assert not any("audio" in k for k in kinds)
    assert events[-1]["response"]["status"] in ("completed", "incomplete")
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    message = [i for i in events[-1]["response"]["output"] if i["type"] == "message"]
    assert (message[0]["content"][0]["text"] if message else "") == text
    await client.close()


async def test_g711_input_turn(server, turn_pcm):
    import numpy as np

    from server.audio_codecs import encode_audio
    from server.protocol.formats import AudioFormat
    from server.resample import resample

    audio = np.frombuffer(turn_pcm, "<i2").astype(np.float32) / 32768
    alaw = encode_audio(resample(audio, 24000, 8000), AudioFormat.PCMA)
    client = await connect(server)
    await client.send({"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcma"}}}}})
    await client.until("session.updated")
    await client.append_audio(alaw, chunk_bytes=800)  # 100 ms of 8 kHz A-law
    events = await client.until("response.done", timeout=120)
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                         "input_audio_buffer.committed"]
    assert events[-1]["response"]["status"] in ("completed", "incomplete")
    await client.close()


async def test_function_call_items_round_trip(server):
    """Tools reach the model and call/output items shape the next reply (the random model does
    not call tools by itself: the model-side call is covered with a scripted engine in
    test_gateway_session.py)."""
    client = await connect(server)
    tool = {"type": "function", "name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    await client.send({"type": "session.update", "session": {"type": "realtime",
                                                             "tools": [tool]}})
    updated = (await client.until("session.updated"))[-1]
    assert updated["session"]["tools"][0]["name"] == "get_weather"
    for item in (
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": '{"celsius": 21}'},
    ):
        await client.send({"type": "conversation.item.create", "item": item})
        added = (await client.until("conversation.item.done"))
        assert added[0]["item"]["type"] == item["type"]
    await client.send({"type": "response.create"})
    events = await client.until("response.done", timeout=120)
    assert events[-1]["response"]["status"] in ("completed", "incomplete")
    assert events[-1]["response"]["usage"]["input_tokens"] > 0
    await client.close()


async def test_voices_endpoints_and_a_turn_in_the_new_voice(server, turn_pcm):
    import io

    import soundfile

    from tests.helpers import speech

    wav = io.BytesIO()
    soundfile.write(wav, speech("This is my new voice. I speak clearly for a few seconds, "
                                "so that the server can learn how I sound.", 16000),
                    16000, format="WAV", subtype="PCM_16")
    async with httpx.AsyncClient(base_url=server.http, timeout=120) as anonymous:
        # The server has API keys: its voices are not public.
        assert (await anonymous.get("/v1/voices")).status_code == 401
        refused = await anonymous.post("/v1/voices", data={"name": "intruder"},
                                       files={"file": ("v.wav", wav.getvalue(), "audio/wav")})
        assert refused.status_code == 401
        wrong = await anonymous.get("/v1/voices", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
    async with httpx.AsyncClient(base_url=server.http, timeout=120, headers=AUTH) as http:
        listing = (await http.get("/v1/voices")).json()
        assert listing["default"] in [v["id"] for v in listing["data"]]
        added = await http.post("/v1/voices", data={"name": "newvoice"},
                                files={"file": ("v.wav", wav.getvalue(), "audio/wav")})
        assert added.status_code == 201, added.text
        assert "newvoice" in [v["id"] for v in (await http.get("/v1/voices")).json()["data"]]
        bad = await http.post("/v1/voices", data={"name": "broken"},
                              files={"file": ("v.wav", b"RIFFnonsense", "audio/wav")})
        assert bad.status_code == 400
        info = (await http.get("/v1/info")).json()
        assert info["test_checkpoint"] is True and info["model"] == "step-audio-2-mini"
        page = await http.get("/")  # the demo page, served beside the API
        assert page.status_code == 200 and "<html" in page.text.lower()
    client = await connect(server)
    await client.send({"type": "session.update", "session": {
        "type": "realtime", "audio": {"output": {"voice": "newvoice"}}}})
    updated = (await client.until("session.updated"))[-1]
    assert updated["session"]["audio"]["output"]["voice"] == "newvoice"
    await completes_a_turn(client, turn_pcm)


async def test_input_transcription(server, turn_pcm):
    client = await connect(server)
    await client.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"transcription": {"model": "step-audio-2-mini"}}}}})
    await client.until("session.updated")
    await client.append_audio(turn_pcm)
    events = await client.until("conversation.item.input_audio_transcription.completed",
                                timeout=120)
    committed = next(e for e in events if e["type"] == "input_audio_buffer.committed")
    assert events[-1]["item_id"] == committed["item_id"]
    assert isinstance(events[-1]["transcript"], str)
    assert events[-1]["usage"]["seconds"] > 0.5
    await client.close()


async def test_twenty_concurrent_sessions_each_complete_a_spoken_turn(server, turn_pcm):
    import asyncio

    async def one() -> dict:
        client = await connect(server)
        try:
            await client.append_audio(turn_pcm, chunk_bytes=4800)
            events = await client.until("response.done", timeout=400)
            return events[-1]["response"]
        finally:
            await client.close()

    results = await asyncio.gather(*(one() for _ in range(20)))
    assert [r["status"] in ("completed", "incomplete") for r in results] == [True] * 20
    assert len({r["id"] for r in results}) == 20
