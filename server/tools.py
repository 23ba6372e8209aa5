"""Tools: OpenAI function tools given to the model, and the built-in server tools (date/time)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServerTool:
    """A tool the gateway runs itself; `run(arguments) -> result text` must be quick."""

    name: str
    schema: dict[str, Any]
    run: Callable[[dict[str, Any]], str]


def _now_text(_arguments: dict[str, Any]) -> str:
    now = dt.datetime.now().astimezone()
    return json.dumps(
        {
            "date": now.date().isoformat(),
            "time": now.strftime("%H:%M:%S"),
            "weekday": now.strftime("%A"),
            "timezone": now.tzname() or "",
        },
        ensure_ascii=False,
    )


DATETIME_TOOL = ServerTool(
    name="get_current_datetime",
    schema={
        "type": "function",
        "function": {
            "name": "get_current_datetime",
            "description": "Get the current local date, time and weekday.",
            "parameters": {"type": "object", "properties": {}, "required": []},
        },
    },
    run=_now_text,
)

_BUILTIN = {"datetime": DATETIME_TOOL}


def server_tools(names: Sequence[str]) -> dict[str, ServerTool]:
    """The built-in tools switched on by configuration, keyed by function name."""
    tools = [_BUILTIN[name] for name in names]
    return {tool.name: tool for tool in tools}


def to_model_schema(tool: Any) -> dict[str, Any]:
    """One OpenAI Realtime tool (flat `{type, name, description, parameters}`) in the nested
    Chat Completions form that the model's `tool_json_schemas` turn carries (spec e.6)."""
    data = tool if isinstance(tool, dict) else tool.model_dump(exclude_none=True)
    if "function" in data:
        return {"type": "function", "function": dict(data["function"])}
    function: dict[str, Any] = {"name": data["name"]}
    if data.get("description"):
        function["description"] = data["description"]
    function["parameters"] = data.get("parameters") or {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def tool_name(schema: dict[str, Any]) -> str:
    return str(schema["function"]["name"])


def run_server_tool(tool: ServerTool, arguments_json: str) -> str:
    """Run a server tool; bad arguments become an error result the model can read."""
    try:
        arguments = json.loads(arguments_json or "{}")
        if not isinstance(arguments, dict):
            raise ValueError("arguments must be a JSON object")
        return tool.run(arguments)
    except (ValueError, TypeError) as exc:
        return json.dumps({"error": str(exc)})
