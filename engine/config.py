"""The Step-Audio 2 `config.json`: a transformers config class (no remote code) and its dims."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoConfig, PretrainedConfig, Qwen2Config

MODEL_TYPE = "step_audio_2"
ARCHITECTURE = "StepAudio2ForCausalLM"
TEST_CHECKPOINT_KEY = "stepaudio2_test_checkpoint"  # marker written by make-checkpoint

# Keys a loader cannot do without (spec a, values tagged [H]); anything else has a default.
REQUIRED_TEXT_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)
REQUIRED_AUDIO_KEYS = (
    "n_mels",
    "n_audio_ctx",
    "n_audio_state",
    "n_audio_head",
    "n_audio_layer",
    "llm_dim",
    "kernel_size",
    "adapter_stride",
)


class ConfigError(ValueError):
    """config.json is missing, unreadable or lacks a required key."""


@dataclass(frozen=True)
class AudioEncoderDims:
    """Audio encoder + adapter sizes, read from `audio_encoder_config`."""

    n_mels: int  # mel bins (128)
    n_audio_ctx: int  # positional rows = max conv2 frames (1500)
    n_audio_state: int  # encoder width (1280)
    n_audio_head: int  # attention heads (20)
    n_audio_layer: int  # transformer blocks (32)
    llm_dim: int  # adapter output width = decoder hidden size (3584)
    kernel_size: int  # adapter conv kernel (3)
    adapter_stride: int  # adapter conv stride (2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AudioEncoderDims:
        return cls(**{name: int(values[name]) for name in REQUIRED_AUDIO_KEYS})


class StepAudio2Config(PretrainedConfig):
    """Wrapper config: a Qwen2 `text_config` (untied lm_head) plus the `audio_encoder_config` dict.

    Registered under model_type `step_audio_2` by `register_config()`, so AutoConfig (and vLLM)
    load the released directory without running its `configuration_step_audio_2.py`.
    """

    model_type = MODEL_TYPE
    sub_configs = {"text_config": Qwen2Config}

    text_config: dict | Qwen2Config | None = None
    audio_encoder_config: dict | None = None
    # The checkpoint stores lm_head apart from the embeddings (spec a): never tie.
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        if self.text_config is None:
            self.text_config = Qwen2Config()
        elif isinstance(self.text_config, dict):
            text = {k: v for k, v in self.text_config.items() if k != "model_type"}
            text["tie_word_embeddings"] = False
            self.text_config = Qwen2Config(**text)
        self.text_config.tie_word_embeddings = False
        if self.audio_encoder_config is None:
            self.audio_encoder_config = {}
        self.tie_word_embeddings = False
        super().__post_init__(**kwargs)

    @property
    def audio_dims(self) -> AudioEncoderDims:
        try:
            return AudioEncoderDims.from_dict(self.audio_encoder_config or {})
        except KeyError as exc:
            raise ConfigError(f"audio_encoder_config lacks required key {exc.args[0]!r}") from exc

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> Any:
        """The Qwen2 decoder config (what vLLM sizes the LLM and KV cache from)."""
        del decoder, encoder
        return self.text_config


def register_config() -> None:
    """Make AutoConfig map `step_audio_2` to StepAudio2Config (idempotent)."""
    AutoConfig.register(MODEL_TYPE, StepAudio2Config, exist_ok=True)


def _config_path(model_dir: str | Path) -> Path:
    path = Path(model_dir)
    return path if path.suffix == ".json" and not path.is_dir() else path / "config.json"


def read_config_dict(model_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """Parse `model_dir/config.json` (or a .json file itself) and check the required keys.

    ConfigError names the file and the key.
    """
    path = _config_path(model_dir)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    for section, keys in (("text_config", REQUIRED_TEXT_KEYS),
                          ("audio_encoder_config", REQUIRED_AUDIO_KEYS)):
        sub = values.get(section)
        if not isinstance(sub, dict):
            raise ConfigError(f"{path}: missing required key {section!r}")
        for key in keys:
            if key not in sub:
                raise ConfigError(f"{path}: missing required key '{section}.{key}'")
            if not isinstance(sub[key], int) or isinstance(sub[key], bool) or sub[key] <= 0:
                raise ConfigError(
                    f"{path}: '{section}.{key}' must be a positive integer, got {sub[key]!r}"
                )
    return path, values


def config_from_dict(values: dict[str, Any]) -> StepAudio2Config:
    """Build the config from a parsed config.json; unknown keys are kept as plain attributes."""
    values = {k: v for k, v in values.items() if k not in ("model_type", "auto_map")}
    return StepAudio2Config(**values)


def load_config(model_dir: str | Path) -> StepAudio2Config:
    """Load `model_dir/config.json` (the released layout) or a config .json file itself.

    Raises ConfigError when the file is missing, unreadable or lacks a required key.
    """
    path, values = read_config_dict(model_dir)
    try:
        config = config_from_dict(values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: invalid config ({exc})") from exc
    config.name_or_path = str(path.parent)
    return config


def is_test_checkpoint(model_dir: str | Path) -> bool:
    """True when config.json carries the random-weights marker written by make-checkpoint."""
    try:
        values = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    marker = values.get(TEST_CHECKPOINT_KEY) if isinstance(values, dict) else None
    return isinstance(marker, dict) and bool(marker.get("random_weights"))
