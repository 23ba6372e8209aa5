"""Structured logs: one JSON object per line on stderr, with the session id when there is one."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

# Set by each session's tasks so every log line they write carries the session id.
session_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "stepaudio2_session_id", default=None
)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", "session_id", ...extra}` per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        session_id = session_id_var.get()
        if session_id is not None:
            entry["session_id"] = session_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        session_id = session_id_var.get()
        prefix = f"[{session_id}] " if session_id else ""
        record.message = record.getMessage()
        line = f"{record.levelname.lower():7s} {record.name}: {prefix}{record.message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


# The project's packages; each gets the same handler, so engine and token2wav lines are not lost.
_LOGGERS = ("server", "engine", "tokenizer_audio")


def configure_logging(level: str = "info", json_lines: bool = True) -> None:
    """Install one stderr handler on the project's loggers (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    handler._stepaudio2 = True  # type: ignore[attr-defined]
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        for old in list(logger.handlers):
            if getattr(old, "_stepaudio2", False):
                logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
