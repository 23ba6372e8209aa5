"""The canonical session configuration and the `session.update` payload that changes it."""

# Both OpenAI session shapes (GA nested `audio.input/output`, beta flat fields) parse into one
# `SessionUpdate`; `SessionConfig.apply(update)` changes only the fields the client gave.
# Rendering a config back in a dialect's shape lives in `server.protocol.dialect`.

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.protocol.formats import AudioFormat

Modality = Literal["text", "audio"]
MaxTokens = Annotated[int, Field(ge=1)] | Literal["inf"]
Eagerness = Literal["low", "medium", "high", "auto"]

#: Voices OpenAI clients send by default; the session maps them to the server's default voice.
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)
DEFAULT_MODEL = "step-audio-2-mini"
DEFAULT_VOICE = "default"

# semantic_vad has no silence parameter: its eagerness picks one (ours, not OpenAI's numbers;
# "low" waits longer before ending the user's turn, "high" ends it sooner).
_SILENCE_MS_BY_EAGERNESS = {"low": 1200, "medium": 700, "auto": 700, "high": 350}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TurnDetection(_Strict):
    """`server_vad` (OpenAI's parameter names and defaults) or `semantic_vad` (by eagerness)."""

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(default=300, ge=0, le=10_000)
    silence_duration_ms: int = Field(default=500, ge=0, le=60_000)
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = Field(default=None, ge=0)
    eagerness: Eagerness | None = None

    def effective(self) -> TurnDetection:
        """The server_vad settings this detection runs with (semantic_vad mapped by eagerness)."""
        if self.type == "server_vad":
            return self
        silence = _SILENCE_MS_BY_EAGERNESS[self.eagerness or "auto"]
        return self.model_copy(update={"type": "server_vad", "silence_duration_ms": silence})


class InputTranscription(_Strict):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class NoiseReduction(_Strict):
    """Accepted and echoed; the server does no noise reduction of its own."""

    type: Literal["near_field", "far_field"] | None = None


class FunctionTool(_Strict):
    type: Literal["function"] = "function"
    name: str = Field(min_length=1)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)


class ToolChoiceFunction(_Strict):
    type: Literal["function"] = "function"
    name: str


ToolChoice = str | ToolChoiceFunction  # "auto" | "none" | "required" | a function


class StepAudio2Options(BaseModel):
    """Server extensions under the `x_stepaudio2` key (optional for clients)."""

    model_config = ConfigDict(extra="allow")

    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)


class SessionConfig(BaseModel):
    """Everything a session was configured with, independent of the wire dialect."""

    model: str = DEFAULT_MODEL
    instructions: str = ""
    output_modalities: list[Modality] = Field(default_factory=lambda: ["audio"])
    input_format: AudioFormat = AudioFormat.PCM16
    output_format: AudioFormat = AudioFormat.PCM16
    voice: str = DEFAULT_VOICE
    speed: float = 1.0
    turn_detection: TurnDetection | None = Field(default_factory=TurnDetection)
    input_transcription: InputTranscription | None = None
    noise_reduction: NoiseReduction | None = None
    tools: list[FunctionTool] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    temperature: float | None = None
    max_output_tokens: MaxTokens = "inf"
    x_stepaudio2: StepAudio2Options = Field(default_factory=StepAudio2Options)

    @property
    def audio_output(self) -> bool:
        """Whether responses speak (else text only)."""
        return "audio" in self.output_modalities

    def apply(self, update: SessionUpdate) -> SessionConfig:
        """A new config with the fields `update` gave changed and everything else kept."""
        changes = update.changes()
        return self.model_copy(update=changes) if changes else self.model_copy()


# --- session.update payload (both shapes) ------------------------------------------------------


class GAAudioFormat(_Strict):
    """GA `{"type": "audio/pcm", "rate": 24000}`, `{"type": "audio/pcmu"}` or `audio/pcma`."""

    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = "audio/pcm"
    rate: Literal[24000] | None = None

    @classmethod
    def of(cls, fmt: AudioFormat) -> GAAudioFormat:
        return cls(type=fmt.ga_type, rate=24000 if fmt is AudioFormat.PCM16 else None)

    def to_format(self) -> AudioFormat:
        return AudioFormat.from_ga_type(self.type)


def _coerce_ga_format(value: object) -> object:
    """Be lenient with clients that send a bare name (`"pcm16"`, `"audio/pcmu"`) as the format."""
    if isinstance(value, str):
        if value in {f.value for f in AudioFormat}:
            return {"type": AudioFormat(value).ga_type}
        return {"type": value}
    return value


class VoiceId(_Strict):
    id: str


class GAAudioInputUpdate(_Strict):
    format: GAAudioFormat | None = None
    transcription: InputTranscription | None = None
    turn_detection: TurnDetection | None = None
    noise_reduction: NoiseReduction | None = None

    @field_validator("format", mode="before")
    @classmethod
    def _format(cls, value: object) -> object:
        return _coerce_ga_format(value)


class GAAudioOutputUpdate(_Strict):
    format: GAAudioFormat | None = None
    voice: str | VoiceId | None = None
    speed: float | None = Field(default=None, gt=0.0, le=4.0)

    @field_validator("format", mode="before")
    @classmethod
    def _format(cls, value: object) -> object:
        return _coerce_ga_format(value)


class GAAudioUpdate(_Strict):
    input: GAAudioInputUpdate | None = None
    output: GAAudioOutputUpdate | None = None


class SessionUpdate(_Strict):
    """`session` of a `session.update`: GA fields, beta fields, or a mix. Unknown keys ignored."""

    type: Literal["realtime"] | None = None
    model: str | None = None
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    x_stepaudio2: StepAudio2Options | None = None
    # GA shape
    output_modalities: list[Modality] | None = None
    audio: GAAudioUpdate | None = None
    max_output_tokens: MaxTokens | None = None
    # beta shape
    modalities: list[Modality] | None = None
    voice: str | None = None
    speed: float | None = Field(default=None, gt=0.0, le=4.0)
    input_audio_format: AudioFormat | None = None
    output_audio_format: AudioFormat | None = None
    turn_detection: TurnDetection | None = None
    input_audio_transcription: InputTranscription | None = None
    input_audio_noise_reduction: NoiseReduction | None = None
    max_response_output_tokens: MaxTokens | None = None

    @property
    def voice_given(self) -> str | None:
        """The voice this update asks for (either shape), or None when it names none."""
        if self.audio and self.audio.output and self.audio.output.voice is not None:
            voice = self.audio.output.voice
            return voice.id if isinstance(voice, VoiceId) else voice
        return self.voice

    def changes(self) -> dict[str, Any]:
        """SessionConfig field -> new value, for the fields this update set (null included)."""
        given = self.model_fields_set
        out: dict[str, Any] = {}
        for name in ("model", "instructions", "tool_choice", "temperature"):
            if name in given and getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if "temperature" in given and self.temperature is None:
            out["temperature"] = None
        if "tools" in given:
            out["tools"] = list(self.tools or [])
        if "x_stepaudio2" in given and self.x_stepaudio2 is not None:
            out["x_stepaudio2"] = self.x_stepaudio2
        for name in ("modalities", "output_modalities"):
            if name in given and getattr(self, name) is not None:
                out["output_modalities"] = list(getattr(self, name))
        for name in ("max_response_output_tokens", "max_output_tokens"):
            if name in given:
                out["max_output_tokens"] = getattr(self, name) or "inf"
        # beta flat fields
        if "voice" in given and self.voice is not None:
            out["voice"] = self.voice
        if "speed" in given and self.speed is not None:
            out["speed"] = self.speed
        if "input_audio_format" in given and self.input_audio_format is not None:
            out["input_format"] = self.input_audio_format
        if "output_audio_format" in given and self.output_audio_format is not None:
            out["output_format"] = self.output_audio_format
        if "turn_detection" in given:
            out["turn_detection"] = self.turn_detection  # null = manual mode
        if "input_audio_transcription" in given:
            out["input_transcription"] = self.input_audio_transcription
        if "input_audio_noise_reduction" in given:
            out["noise_reduction"] = self.input_audio_noise_reduction
        # GA nested fields
        audio_in = self.audio.input if self.audio else None
        if audio_in is not None:
            sub = audio_in.model_fields_set
            if "format" in sub and audio_in.format is not None:
                out["input_format"] = audio_in.format.to_format()
            if "turn_detection" in sub:
                out["turn_detection"] = audio_in.turn_detection
            if "transcription" in sub:
                out["input_transcription"] = audio_in.transcription
            if "noise_reduction" in sub:
                out["noise_reduction"] = audio_in.noise_reduction
        audio_out = self.audio.output if self.audio else None
        if audio_out is not None:
            sub = audio_out.model_fields_set
            if "format" in sub and audio_out.format is not None:
                out["output_format"] = audio_out.format.to_format()
            if self.voice_given is not None:
                out["voice"] = self.voice_given
            if "speed" in sub and audio_out.speed is not None:
                out["speed"] = audio_out.speed
        return out
