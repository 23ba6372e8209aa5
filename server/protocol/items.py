"""Conversation items (messages, function calls and their outputs) in one canonical form."""

# Content part types are OpenAI's GA names (`input_text`, `input_audio`, `output_text`,
# `output_audio`); the beta names `text` / `audio` of assistant parts are accepted on input and
# produced by `server.protocol.dialect` for beta connections.

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ItemStatus = Literal["completed", "incomplete", "in_progress"]
Role = Literal["user", "assistant", "system"]
ContentType = Literal["input_text", "input_audio", "output_text", "output_audio"]

# Beta names of assistant parts -> GA names.
_BETA_CONTENT_TYPES = {"text": "output_text", "audio": "output_audio"}
# Which content part types a role may hold.
_ROLE_CONTENT: dict[str, frozenset[str]] = {
    "user": frozenset({"input_text", "input_audio"}),
    "assistant": frozenset({"output_text", "output_audio"}),
    "system": frozenset({"input_text"}),
}


class ContentPart(BaseModel):
    """One content part; `audio` is base64 in the session's input format, when present."""

    model_config = ConfigDict(extra="ignore")

    type: ContentType
    text: str | None = None
    audio: str | None = None
    transcript: str | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _beta_names(cls, value: object) -> object:
        return _BETA_CONTENT_TYPES.get(value, value) if isinstance(value, str) else value


class MessageItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["message"] = "message"
    id: str | None = None
    object: Literal["realtime.item"] = "realtime.item"
    role: Role
    status: ItemStatus = "completed"
    content: list[ContentPart] = Field(default_factory=list)

    @model_validator(mode="after")
    def _content_matches_role(self) -> MessageItem:
        allowed = _ROLE_CONTENT[self.role]
        for part in self.content:
            if part.type not in allowed:
                raise ValueError(
                    f"content type {part.type!r} is not allowed in a {self.role} message "
                    f"(allowed: {', '.join(sorted(allowed))})"
                )
        return self


class FunctionCallItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call"] = "function_call"
    id: str | None = None
    object: Literal["realtime.item"] = "realtime.item"
    status: ItemStatus = "completed"
    call_id: str
    name: str
    arguments: str = ""


class FunctionCallOutputItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call_output"] = "function_call_output"
    id: str | None = None
    object: Literal["realtime.item"] = "realtime.item"
    status: ItemStatus = "completed"
    call_id: str
    output: str


Item = Annotated[
    MessageItem | FunctionCallItem | FunctionCallOutputItem, Field(discriminator="type")
]
