"""Tests for engine/parser.py: TA4 streams, pads, tool calls, partial UTF-8, end of turn."""

from __future__ import annotations

import json

import pytest

from engine.parser import (
    AudioCodes,
    EndOfTurn,
    OutputParser,
    TextDelta,
    ToolCall,
    ToolCallError,
)
from engine.tokens import SpecialTokens


def ids_of(tok, token: str) -> int:
    return tok.get_vocab()[token]


def enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def ta4(tok, text: str, codes: list[int]) -> list[int]:
    """[text slot, 4 audio slots]* as spec d describes, `<tts_pad>`/`<audio_6561>` as fillers."""
    text_ids = enc(tok, text)
    n_groups = max(len(text_ids), -(-len(codes) // 4))
    out: list[int] = []
    for g in range(n_groups):
        out.append(text_ids[g] if g < len(text_ids) else ids_of(tok, "<tts_pad>"))
        group = codes[4 * g : 4 * g + 4]
        out.extend(ids_of(tok, f"<audio_{c}>") for c in group)
        out.extend([ids_of(tok, "<audio_6561>")] * (4 - len(group)))
    return out + [ids_of(tok, "<tts_end>")]


def run(parser: OutputParser, ids: list[int], chunk: int) -> list:
    events: list = []
    for start in range(0, len(ids), chunk):
        events.extend(parser.feed(ids[start : start + chunk]))
    return events + parser.finish()


def text_of(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def codes_of(events: list) -> list[int]:
    return [c for e in events if isinstance(e, AudioCodes) for c in e.codes]


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
@pytest.mark.parametrize("text", ["Hello, how are you today?", "你好，今天天气很好。🎉"])
def test_ta4_stream(tok, sp: SpecialTokens, text: str, chunk: int) -> None:
    codes = [(97 * i + 5) % 6561 for i in range(37)] + [6560, 0]
    ids = ta4(tok, text, codes) + [ids_of(tok, "<|EOT|>")]
    parser = OutputParser(tok, sp)
    events = run(parser, ids, chunk)
    assert text_of(events) == text
    assert codes_of(events) == codes
    assert events[-1] == EndOfTurn("stop")
    assert sum(isinstance(e, EndOfTurn) for e in events) == 1
    assert all("\ufffd" not in e.text and "<" not in e.text
               for e in events if isinstance(e, TextDelta))
    assert parser.generated_ids == ids[:-1]  # everything but the stop token, for replay
    assert parser.stop_id == ids_of(tok, "<|EOT|>")
    assert parser.n_audio_codes == len(codes)
    assert parser.n_text_tokens == len(enc(tok, text))


def test_audio_pads_and_rows_above_the_pad_are_not_speech(tok, sp: SpecialTokens) -> None:
    parser = OutputParser(tok, sp)
    events = parser.feed([sp.audio_id(1), sp.audio_pad, sp.audio_pad + 100, sp.audio_id(2),
                          sp.tts_pad, sp.tts_start, sp.tts_end])
    assert events == [AudioCodes((1, 2))]
    assert parser.n_audio_pads == 2


def test_partial_utf8_is_held_back_across_feeds(tok, sp: SpecialTokens) -> None:
    ids = enc(tok, "🎉")
    assert len(ids) > 1  # the emoji's bytes are split over several tokens
    parser = OutputParser(tok, sp)
    held = []
    for token_id in ids[:-1]:
        held += parser.feed([token_id, sp.audio_id(7)])  # audio slots between the pieces
    assert all(isinstance(e, AudioCodes) for e in held)  # no text yet, no U+FFFD
    assert codes_of(held) == [7] * (len(ids) - 1)
    assert text_of(parser.feed([ids[-1]])) == "🎉"


def test_chinese_split_characters_come_out_whole(tok, sp: SpecialTokens) -> None:
    text = "魑魅魍魉，谢谢。"  # rare characters: byte tokens, not merged
    ids = enc(tok, text)
    assert len(ids) > len(text)
    parser = OutputParser(tok, sp)
    deltas = [d for i in ids for d in parser.feed([i])] + parser.finish()
    pieces = [d.text for d in deltas if isinstance(d, TextDelta)]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_invalid_bytes_become_a_replacement_char_not_a_stall(tok, sp: SpecialTokens) -> None:
    lone_continuation = enc(tok, "é")[-1]  # second byte of a two-byte character
    assert tok.decode([lone_continuation]) == "\ufffd"
    parser = OutputParser(tok, sp)
    events = parser.feed([lone_continuation] + enc(tok, "ok"))
    assert text_of(events) == "\ufffdok"


def test_truncated_character_at_the_end_is_flushed(tok, sp: SpecialTokens) -> None:
    parser = OutputParser(tok, sp)
    events = parser.feed(enc(tok, "a🎉")[:-1]) + parser.finish("length")
    assert text_of(events) == "a\ufffd"
    assert events[-1] == EndOfTurn("length")


TOOLS = ["get_weather", "get_time"]
ARGS = '{"city": "北京", "unit": "celsius"}'


def call_text(name: str, args: str) -> str:
    return f"<tool_call>function\n{name}\n{args}</tool_call>"


@pytest.mark.parametrize("atomic_tags", [True, False])
def test_tool_calls_split_at_every_point(tok, sp: SpecialTokens, atomic_tags: bool) -> None:
    pieces = ["Let me check.", call_text("get_weather", ARGS), call_text("get_time", "{}")]
    if atomic_tags:
        ids = enc(tok, "".join(pieces))
        assert sp.tool_call_start in ids
    else:
        # A tokenizer without single-token tags spells them with ordinary text tokens.
        ids = [i for p in "".join(pieces).replace("<tool_call>", "<tool\x00_call>")
               .replace("</tool_call>", "</tool\x00_call>").split("\x00") for i in enc(tok, p)]
        assert sp.tool_call_start not in ids and tok.decode(ids) == "".join(pieces)
    ids.append(sp.eot)
    for split in range(len(ids) + 1):
        parser = OutputParser(tok, sp, tool_names=TOOLS)
        events = parser.feed(ids[:split]) + parser.feed(ids[split:]) + parser.finish()
        assert text_of(events) == "Let me check.", split
        calls = [e for e in events if isinstance(e, ToolCall)]
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [
            ("get_weather", {"city": "北京", "unit": "celsius"}), ("get_time", {})], split
        assert len({c.call_id for c in calls}) == 2
        assert events[-1] == EndOfTurn("stop")


def test_spoken_reply_then_tool_call(tok, sp: SpecialTokens) -> None:
    ids = ta4(tok, "One moment.", list(range(12))) + enc(tok, call_text("get_time", "{}"))
    parser = OutputParser(tok, sp, tool_names=TOOLS)
    events = run(parser, ids + [sp.eot], 5)
    assert text_of(events) == "One moment."
    assert codes_of(events) == list(range(12))
    calls = [(e.name, e.arguments) for e in events if isinstance(e, ToolCall)]
    assert calls == [("get_time", "{}")]
    assert parser.generated_ids == ids


@pytest.mark.parametrize("body, reason", [
    ("function\nsend_email\n{}", "unknown tool"),
    ("function\nget_weather\n{city: Beijing}", "not JSON"),
    ("function\nget_weather\n[1, 2]", "not a JSON object"),
    ("get_weather {}", "expected"),
])
def test_bad_tool_calls_are_error_events(tok, sp: SpecialTokens, body: str, reason: str) -> None:
    ids = enc(tok, f"A<tool_call>{body}</tool_call>B") + [sp.eot]
    parser = OutputParser(tok, sp, tool_names=TOOLS)
    events = run(parser, ids, 2)
    errors = [e for e in events if isinstance(e, ToolCallError)]
    assert len(errors) == 1 and reason in errors[0].message
    assert errors[0].raw == f"<tool_call>{body}</tool_call>"
    assert text_of(events) == "AB"
    assert not any(isinstance(e, ToolCall) for e in events)


def test_any_tool_name_without_a_tool_list(tok, sp: SpecialTokens) -> None:
    parser = OutputParser(tok, sp)
    events = run(parser, enc(tok, call_text("anything", "{}")), 3)
    assert [e.name for e in events if isinstance(e, ToolCall)] == ["anything"]


def test_unterminated_tool_call_at_the_end(tok, sp: SpecialTokens) -> None:
    parser = OutputParser(tok, sp, tool_names=TOOLS)
    events = parser.feed(enc(tok, 'Hi<tool_call>function\nget_time\n{"a"'))
    events += parser.finish("length")
    assert text_of(events) == "Hi"
    assert isinstance(events[-2], ToolCallError) and "unterminated" in events[-2].message
    assert events[-1] == EndOfTurn("length")


def test_text_that_only_looks_like_a_tag_is_kept(tok, sp: SpecialTokens) -> None:
    parser = OutputParser(tok, sp)
    first = parser.feed(enc(tok, "if a <"))
    assert text_of(first) == "if a "  # "<" could start a tag: held back
    events = first + parser.feed(enc(tok, "tool b")) + parser.finish()
    assert text_of(events) == "if a <tool b"
    parser = OutputParser(tok, sp)
    assert text_of(parser.feed(enc(tok, "x <to")) + parser.finish()) == "x <to"


def test_end_of_turn_stops_parsing(tok, sp: SpecialTokens) -> None:
    parser = OutputParser(tok, sp)
    events = parser.feed(enc(tok, "Hi") + [sp.endoftext] + enc(tok, "more"))
    assert events == [TextDelta("Hi"), EndOfTurn("stop")]
    assert parser.feed([sp.audio_id(3)]) == [] and parser.finish() == []
    assert parser.ids_after_end == enc(tok, "more") + [sp.audio_id(3)]
    assert parser.generated_ids == enc(tok, "Hi")


def test_unused_ids_and_control_tokens_are_not_text(tok, sp: SpecialTokens) -> None:
    parser = OutputParser(tok, sp)
    im_start = ids_of(tok, "<|im_start|>")
    events = parser.feed([100_000, sp.bot, im_start, sp.audio_patch] + enc(tok, "ok"))
    assert text_of(events) == "ok"
    assert parser.n_dropped == 3
