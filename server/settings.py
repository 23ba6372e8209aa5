"""Gateway settings: one pydantic-settings object read from `STEPAUDIO2_*` env vars or CLI flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Server-side tools that configuration may switch on (server/tools.py implements them).
ServerToolName = Literal["datetime"]


class Settings(BaseSettings):
    """Everything the gateway can be configured with; `serve` flags mirror these fields.

    Attributes:
        model: Step-Audio-2-mini checkpoint directory (with `token2wav/`).
        engine_urls: remote vLLM servers; empty = the embedded in-process engine.
        device: torch device for token2wav ("cpu", "cuda:0", ...).
        token2wav_precision: "fp32" reproduces the reference; "int8" (CPU only) runs the flow's
            DiT, about 1.4x faster per chunk at ~0.6 % mel error; "bf16" suits GPUs and AMX CPUs.
        api_keys: accepted keys; empty = open server.
        max_sessions: concurrent websocket sessions; the next handshake gets HTTP 503.
        max_event_bytes: largest client event accepted (PROTOCOL.md: 15 MiB of base64 per append).
        max_input_buffer_s: buffered uncommitted input audio before `buffer_too_large`.
        max_prompt_tokens: prompt budget; the oldest turns leave the prompt (not the client's view).
        session_idle_timeout_s: close a session that sent nothing for this long (0 = never).
        ping_interval_s: websocket keepalive ping interval.
        audio_delta_ms: target duration of one `response.output_audio.delta` (40-200 ms).
        server_tools: built-in tools the model may call (executed by the server).
        temperature, top_p, repetition_penalty, max_output_tokens: sampling defaults (spec e.8).
        engine_max_model_len, engine_max_num_seqs, engine_kv_cache_gib, engine_enforce_eager:
            sizes of the embedded vLLM engine (eager mode: no CUDA graphs / compilation; unset
            keeps the engine's default).
        engine_startup_timeout_s, engine_health_interval_s: remote engines: how long to wait for
            a first healthy server at start, and how often each is health-checked.
    """

    model_config = SettingsConfigDict(
        env_prefix="STEPAUDIO2_", env_ignore_empty=True, extra="ignore"
    )

    model: Path = Path("Step-Audio-2-mini")
    model_name: str = "step-audio-2-mini"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    engine_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    device: str = "cpu"
    token2wav_threads: int | None = Field(default=None, ge=1)
    token2wav_precision: Literal["fp32", "bf16", "int8"] = "fp32"
    voices_dir: Path | None = None
    default_voice: str | None = None
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allow_insecure_open: bool = True
    max_sessions: int = Field(default=64, ge=1)
    max_event_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_input_buffer_s: float = Field(default=120.0, gt=0)
    max_prompt_tokens: int = Field(default=8000, ge=256)
    session_idle_timeout_s: float = Field(default=0.0, ge=0)
    ping_interval_s: float = Field(default=20.0, gt=0)
    audio_delta_ms: int = Field(default=100, ge=40, le=200)
    shutdown_timeout_s: float = Field(default=5.0, gt=0)
    instructions: str = "You are a helpful assistant."
    server_tools: Annotated[list[ServerToolName], NoDecode] = Field(default_factory=list)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.05, gt=0.0)
    max_output_tokens: int = Field(default=4096, ge=1)
    transcription_temperature: float = Field(default=0.1, ge=0.0, le=2.0)
    transcription_max_tokens: int = Field(default=256, ge=1)
    engine_max_model_len: int = Field(default=8192, ge=256)
    engine_max_num_seqs: int = Field(default=16, ge=1)
    engine_kv_cache_gib: float | None = Field(default=None, gt=0)
    engine_enforce_eager: bool | None = None
    engine_startup_timeout_s: float = Field(default=600.0, ge=0)
    engine_health_interval_s: float = Field(default=5.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True
    static_dir: Path | None = None

    @field_validator("engine_urls", "api_keys", "server_tools", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        # Env vars hold lists as "a,b" or as a JSON list.
        if isinstance(value, str):
            stripped = value.strip()
            if stripped.startswith("["):
                return json.loads(stripped)
            return [part.strip() for part in stripped.split(",") if part.strip()]
        return value

    @field_validator("engine_urls")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"engine URL must start with http:// or https://: {url!r}")
        return [url.rstrip("/") for url in urls]

    @model_validator(mode="after")
    def _refuse_open_public_server(self) -> Settings:
        # An open server on a public interface is an easy mistake; refuse it unless asked for.
        public = self.host not in ("127.0.0.1", "localhost", "::1")
        if public and not self.api_keys and not self.allow_insecure_open:
            raise ValueError("listening on a public interface without api_keys")
        return self
