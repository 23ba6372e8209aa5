"""The `serve` subcommand: settings from flags and `STEPAUDIO2_*` env vars, then uvicorn."""

from __future__ import annotations

import argparse
import sys

# flag -> Settings field; flags left out keep the env var or the default.
_FLAGS: tuple[tuple[str, str, dict], ...] = (
    ("--model", "model", {"metavar": "DIR", "help": "Step-Audio-2-mini checkpoint directory"}),
    ("--host", "host", {}),
    ("--port", "port", {"type": int}),
    ("--engine-url", "engine_urls",
     {"action": "append", "metavar": "URL", "help": "remote vLLM server (repeatable)"}),
    ("--device", "device", {"help": "token2wav device, e.g. cpu or cuda:0"}),
    ("--token2wav-threads", "token2wav_threads", {"type": int}),
    ("--token2wav-precision", "token2wav_precision",
     {"choices": ["fp32", "bf16", "int8"], "help": "int8: faster on CPUs, ~1 %% mel error"}),
    ("--voices-dir", "voices_dir", {"metavar": "DIR"}),
    ("--default-voice", "default_voice", {}),
    ("--api-key", "api_keys", {"action": "append", "metavar": "KEY", "help": "repeatable"}),
    ("--max-sessions", "max_sessions", {"type": int}),
    ("--max-event-bytes", "max_event_bytes", {"type": int}),
    ("--max-input-buffer-s", "max_input_buffer_s", {"type": float}),
    ("--max-prompt-tokens", "max_prompt_tokens", {"type": int}),
    ("--session-idle-timeout-s", "session_idle_timeout_s", {"type": float}),
    ("--ping-interval-s", "ping_interval_s", {"type": float}),
    ("--audio-delta-ms", "audio_delta_ms", {"type": int}),
    ("--instructions", "instructions", {}),
    ("--server-tool", "server_tools",
     {"action": "append", "choices": ["datetime"], "help": "built-in tool (repeatable)"}),
    ("--temperature", "temperature", {"type": float}),
    ("--top-p", "top_p", {"type": float}),
    ("--repetition-penalty", "repetition_penalty", {"type": float}),
    ("--max-output-tokens", "max_output_tokens", {"type": int}),
    ("--engine-max-model-len", "engine_max_model_len", {"type": int}),
    ("--engine-max-num-seqs", "engine_max_num_seqs", {"type": int}),
    ("--engine-kv-cache-gib", "engine_kv_cache_gib", {"type": float}),
    ("--engine-enforce-eager", "engine_enforce_eager",
     {"action": argparse.BooleanOptionalAction, "help": "no CUDA graphs / compilation"}),
    ("--engine-startup-timeout-s", "engine_startup_timeout_s", {"type": float}),
    ("--engine-health-interval-s", "engine_health_interval_s", {"type": float}),
    ("--log-level", "log_level", {"choices": ["debug", "info", "warning", "error"]}),
    ("--static-dir", "static_dir", {"metavar": "DIR"}),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the realtime gateway (OpenAI Realtime API over a websocket)",
        description="Flags override STEPAUDIO2_* environment variables of the same name.",
    )
    for flag, dest, options in _FLAGS:
        parser.add_argument(flag, dest=dest, default=None, **options)
    parser.add_argument("--plain-logs", action="store_true", help="human-readable log lines")
    parser.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from server.app import create_app, gateway_server
    from server.logs import configure_logging
    from server.settings import Settings

    overrides = {dest: getattr(args, dest) for _, dest, _ in _FLAGS}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if args.plain_logs:
        overrides["log_json"] = False
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        sys.stderr.write(f"invalid settings: {exc}\n")
        return 2
    if not (settings.model / "config.json").is_file():
        sys.stderr.write(f"no checkpoint at {settings.model} (config.json missing); write a "
                         "test one with `stepaudio2-rt make-checkpoint --tiny DIR`\n")
        return 2
    configure_logging(settings.log_level, settings.log_json)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws_ping_interval=settings.ping_interval_s,
        ws_ping_timeout=settings.ping_interval_s,
        # Above our own event limit, so an oversized event gets an `error` event, not a 1009.
        ws_max_size=4 * settings.max_event_bytes,
        ws_per_message_deflate=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s) + 1,
        lifespan="on",
    )
    server = gateway_server(config)
    server.run()
    return 0 if server.started else 1
