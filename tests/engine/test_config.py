"""config.json loading: the released layout, AutoConfig without remote code, errors, marker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoConfig, Qwen2Config

from engine.config import (
    TEST_CHECKPOINT_KEY,
    AudioEncoderDims,
    ConfigError,
    StepAudio2Config,
    is_test_checkpoint,
    load_config,
    register_config,
)
from tests.helpers import DATA

RELEASED = json.loads((DATA / "step-audio2-mini-config.json").read_text())


def write(tmp_path: Path, values: dict) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(values))
    return tmp_path


def test_released_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, RELEASED))
    text = config.text_config
    assert isinstance(text, Qwen2Config)
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (3584, 18944, 28)
    assert (text.num_attention_heads, text.num_key_value_heads, text.vocab_size) == (28, 4, 158720)
    assert text.max_position_embeddings == 16384
    assert text.rms_norm_eps == 1e-6
    assert text.rope_parameters["rope_theta"] == 1e6
    assert text.tie_word_embeddings is False and config.tie_word_embeddings is False
    assert config.get_text_config() is text
    assert config.architectures == ["StepAudio2ForCausalLM"]
    assert config.audio_dims == AudioEncoderDims(
        n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20, n_audio_layer=32,
        llm_dim=3584, kernel_size=3, adapter_stride=2,
    )


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    values = json.loads(json.dumps(RELEASED))
    values["some_future_key"] = {"x": 1}
    values["text_config"]["another_key"] = 3
    values["audio_encoder_config"]["extra"] = "y"
    config = load_config(write(tmp_path, values))
    assert config.audio_dims.n_audio_state == 1280


@pytest.mark.parametrize(
    "section, key",
    [("text_config", "hidden_size"), ("text_config", "vocab_size"),
     ("audio_encoder_config", "n_audio_layer"), ("audio_encoder_config", "adapter_stride")],
)
def test_missing_required_key_names_key_and_file(tmp_path: Path, section: str, key: str) -> None:
    values = json.loads(json.dumps(RELEASED))
    del values[section][key]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, values))
    assert f"{section}.{key}" in str(info.value)
    assert str(tmp_path / "config.json") in str(info.value)


def test_missing_section_missing_file_and_bad_json(tmp_path: Path) -> None:
    values = {k: v for k, v in RELEASED.items() if k != "audio_encoder_config"}
    with pytest.raises(ConfigError, match="audio_encoder_config"):
        load_config(write(tmp_path, values))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="JSON"):
        load_config(tmp_path)
    bad = json.loads(json.dumps(RELEASED))
    bad["audio_encoder_config"]["n_mels"] = "128"
    with pytest.raises(ConfigError, match="n_mels"):
        load_config(write(tmp_path, bad))


def test_autoconfig_loads_without_remote_code(tmp_path: Path) -> None:
    register_config()
    register_config()  # idempotent
    # The released directory names remote code in auto_map; it must never be needed.
    config = AutoConfig.from_pretrained(write(tmp_path, RELEASED))
    assert isinstance(config, StepAudio2Config)
    assert config.get_text_config().hidden_size == 3584
    assert config.audio_dims.llm_dim == 3584
    # a save / load round trip keeps the layout
    config.save_pretrained(tmp_path / "again")
    again = load_config(tmp_path / "again")
    assert again.audio_dims == config.audio_dims
    assert again.text_config.num_key_value_heads == 4


def test_test_checkpoint_marker(tmp_path: Path) -> None:
    assert not is_test_checkpoint(write(tmp_path, RELEASED))
    marked = dict(RELEASED)
    marked[TEST_CHECKPOINT_KEY] = {"random_weights": True, "size": "tiny", "seed": 0}
    assert is_test_checkpoint(write(tmp_path, marked))
    assert load_config(tmp_path).audio_dims.n_mels == 128
    assert not is_test_checkpoint(tmp_path / "missing")


def test_vllm_config_parser_loads_the_directory(tmp_path: Path) -> None:
    from vllm.transformers_utils.config import get_config

    register_config()
    config = get_config(write(tmp_path, RELEASED), trust_remote_code=False)
    assert isinstance(config, StepAudio2Config)
    text = config.get_text_config()
    assert (text.hidden_size, text.num_key_value_heads, text.vocab_size) == (3584, 4, 158720)
    assert text.max_position_embeddings == 16384
    assert config.tie_word_embeddings is False and text.tie_word_embeddings is False
