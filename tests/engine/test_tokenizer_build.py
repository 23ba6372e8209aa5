"""Tests for engine/tokenizer_build.py: the tiny checkpoint's tokenizer files load and behave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.tokenizer_build import write_tokenizer

FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
         "special_tokens_map.json", "added_tokens.json")


def test_files_are_the_qwen2_set_and_small(tok_dir: Path) -> None:
    for name in FILES:
        assert (tok_dir / name).is_file(), name
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "Qwen2TokenizerFast"
    assert config["bos_token"] is None and config["add_bos_token"] is False
    total = sum((tok_dir / name).stat().st_size for name in FILES)
    assert total < 10 * 2**20


def test_written_files_are_deterministic(tok_dir: Path, tmp_path: Path) -> None:
    write_tokenizer(tmp_path)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (tok_dir / name).read_bytes(), name


def test_ids_from_the_spec(tok) -> None:
    # Ids tagged [H] (and [M-H] for <|EOT|>) in spec d.
    expected = {"<|endoftext|>": 151643, "<|im_end|>": 151645, "<|EOT|>": 151665,
                "<audio_start>": 151688, "<audio_end>": 151689, "<audio_patch>": 151690,
                "<tts_start>": 151693, "<tts_end>": 151694, "<audio_0>": 151696,
                "<audio_6561>": 158257}
    vocab = tok.get_vocab()
    for token, token_id in expected.items():
        assert vocab[token] == token_id, token
    for token in ("<|BOT|>", "<tts_pad>", "<tool_call>", "</tool_call>", "<think>", "</think>"):
        assert 151643 <= vocab[token] < 151696, token
    assert max(vocab.values()) < 158720
    added = set(tok.added_tokens_decoder)
    text_ids = [i for t, i in vocab.items() if i not in added]
    assert max(text_ids) < 151643
    assert tok.encode("hello", add_special_tokens=True) == tok.encode("hello",
                                                                      add_special_tokens=False)


def test_every_audio_token_is_one_token(tok) -> None:
    text = "".join(f"<audio_{k}>" for k in range(6562))
    assert tok.encode(text, add_special_tokens=False) == list(range(151696, 151696 + 6562))


@pytest.mark.parametrize("text", [
    "Hello, how are you today? The weather is sunny.",
    "今天天气很好，阳光明媚，适合出去散步。",
    "Mixed 中文 and English, emoji 🎉🙂, tabs\tand\n\nnewlines  with  spaces ",
    "{\"location\": \"北京\", \"unit\": \"celsius\"}",
])
def test_round_trip(tok, text: str) -> None:
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text


def test_ordinary_text_gets_merges(tok) -> None:
    for text in ("The weather today is sunny, thank you.", "今天天气很好，谢谢你。"):
        assert len(tok.encode(text, add_special_tokens=False)) < len(text.encode()) / 2


def test_special_tokens_are_atomic_in_text(tok) -> None:
    vocab = tok.get_vocab()
    ids = tok.encode("<|BOT|>human\nhi<|EOT|><tts_start><audio_17>", add_special_tokens=False)
    assert ids[0] == vocab["<|BOT|>"]
    assert ids[-3:] == [vocab["<|EOT|>"], vocab["<tts_start>"], vocab["<audio_17>"]]
    assert tok.decode(ids) == "<|BOT|>human\nhi<|EOT|><tts_start><audio_17>"


def _render(tok, messages, **kwargs) -> str:
    return tok.apply_chat_template(messages, tokenize=False, **kwargs)


def test_chat_template_turns_and_generation_prompt(tok) -> None:
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hi!"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Bye."}]
    assert _render(tok, messages, add_generation_prompt=True) == (
        "<|BOT|>system\nYou are a helpful assistant.<|EOT|><|BOT|>human\nHi!<|EOT|>"
        "<|BOT|>assistant\nHello.<|EOT|><|BOT|>human\nBye.<|EOT|><|BOT|>assistant\n"
    )


def test_chat_template_spoken_reply_with_continue_final_message(tok) -> None:
    messages = [{"role": "user", "content": "Hi!"},
                {"role": "assistant", "content": "<tts_start>"}]
    assert _render(tok, messages, continue_final_message=True) == (
        "<|BOT|>human\nHi!<|EOT|><|BOT|>assistant\n<tts_start>"
    )


def test_chat_template_audio_parts_follow_the_vllm_rule(tok) -> None:
    audio_only = [{"role": "user", "content": [{"type": "audio"}]}]
    assert _render(tok, audio_only) == "<|BOT|>human\n<audio_patch>\n<|EOT|>"
    mixed = [{"role": "user", "content": [
        {"type": "text", "text": "Translate this."}, {"type": "audio"},
        {"type": "input_audio"}, {"type": "text", "text": "Be brief."}]}]
    assert _render(tok, mixed) == (
        "<|BOT|>human\n<audio_patch>\n<audio_patch>\nTranslate this.\nBe brief.<|EOT|>"
    )


def test_chat_template_tools_calls_and_results(tok) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "天气", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "北京"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "function_output", "content": "result"},
    ]
    schemas = json.dumps(tools, ensure_ascii=False)
    assert _render(tok, messages, tools=tools, add_generation_prompt=True) == (
        "<|BOT|>system\nS<|EOT|>"
        f"<|BOT|>tool_json_schemas\n{schemas}<|EOT|>"
        "<|BOT|>human\nWeather?<|EOT|>"
        "<|BOT|>assistant\n<tool_call>function\nget_weather\n"
        + json.dumps({"city": "北京"}) + "</tool_call><|EOT|>"
        "<|BOT|>function_output\nget_weather\nsunny<|EOT|>"
        "<|BOT|>input\nresult<|EOT|>"
        "<|BOT|>assistant\n"
    )
    # Spec e.6 quirk of the fork: no system message -> an empty, unclosed system turn.
    assert _render(tok, messages[1:2], tools=tools) == (
        f"<|BOT|>system\n<|BOT|>tool_json_schemas\n{schemas}<|EOT|><|BOT|>human\nWeather?<|EOT|>"
    )


def test_loads_inside_vllm(tok_dir: Path) -> None:
    from vllm.tokenizers import get_tokenizer

    tokenizer = get_tokenizer(str(tok_dir))
    assert tokenizer.max_token_id == 158257
    ids = tokenizer.encode("你好<|EOT|>", add_special_tokens=False)
    assert ids[-1] == 151665
    assert tokenizer.decode(ids, skip_special_tokens=False) == "你好<|EOT|>"


def test_special_tokens_looked_up_by_string(tok) -> None:
    from engine.tokens import SpecialTokens

    vocab = tok.get_vocab()
    special = SpecialTokens.from_tokenizer(tok)
    assert special.eot == vocab["<|EOT|>"] and special.bot == vocab["<|BOT|>"]
    assert special.tts_pad == vocab["<tts_pad>"] and special.tts_start == vocab["<tts_start>"]
    assert special.tool_call_start == vocab["<tool_call>"]
    assert special.audio_base == vocab["<audio_0>"]
    assert special.audio_pad == vocab["<audio_6561>"]
    assert set(special.stop_ids) == {vocab["<|EOT|>"], vocab["<|endoftext|>"], vocab["<|im_end|>"]}
    assert special.audio_id(6560) == vocab["<audio_6560>"]
    assert special.audio_code(vocab["<audio_42>"]) == 42
    assert special.is_audio(vocab["<audio_6561>"]) and not special.is_speech(special.audio_pad)
    assert special.is_speech(vocab["<audio_0>"]) and not special.is_audio(vocab["<tts_end>"])
    with pytest.raises(ValueError):
        special.audio_id(6562)
    with pytest.raises(ValueError):
        special.audio_code(vocab["<|EOT|>"])


def test_special_tokens_missing_or_misplaced_is_a_clear_error(tok) -> None:
    from engine.tokens import SpecialTokenError, SpecialTokens

    vocab = dict(tok.get_vocab())
    del vocab["<tts_start>"]
    with pytest.raises(SpecialTokenError, match="<tts_start>"):
        SpecialTokens.from_vocab(vocab)
    vocab = dict(tok.get_vocab())
    vocab["<audio_100>"] = 5
    with pytest.raises(SpecialTokenError, match="<audio_100>"):
        SpecialTokens.from_vocab(vocab)
    vocab = dict(tok.get_vocab())
    del vocab["<think>"]
    assert SpecialTokens.from_vocab(vocab).think_start is None  # optional (spec e.7 [M])
    vocab = dict(tok.get_vocab())
    del vocab["<tts_pad>"]
    assert SpecialTokens.from_vocab(vocab).tts_pad is None  # its name is a guess (spec d [L])
