"""Step-Audio 2 special-token ids, looked up by string from the checkpoint's tokenizer (spec d)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

N_SPEECH_CODES = 6561  # 3^8 FSQ codes: 0..6560 are speech, `<audio_6561>` is the pad (spec d)

# field name -> token string; all required.
_REQUIRED = {
    "endoftext": "<|endoftext|>",
    "im_end": "<|im_end|>",
    "eot": "<|EOT|>",
    "bot": "<|BOT|>",
    "audio_start": "<audio_start>",
    "audio_end": "<audio_end>",
    "audio_patch": "<audio_patch>",
    "tts_start": "<tts_start>",
    "tts_end": "<tts_end>",
}
# Not every tokenizer has these as single tokens (spec e.6/e.7 [L]/[M]); the parser and the
# prompt builder work on their text, so they are optional. `<tts_pad>`'s very name is a guess
# (spec d [L]); any special token that is not text is dropped from transcripts anyway.
_OPTIONAL = {
    "tts_pad": "<tts_pad>",
    "tool_call_start": "<tool_call>",
    "tool_call_end": "</tool_call>",
    "think_start": "<think>",
    "think_end": "</think>",
}


class SpecialTokenError(ValueError):
    """The tokenizer lacks a token Step-Audio 2 needs, or its audio tokens are not contiguous."""


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the Step-Audio 2 control tokens and of the audio tokens `<audio_0>`..`<audio_6561>`.

    Audio slot ids are every id from `audio_base` up (spec d): code = id - audio_base, where
    codes 0..6560 are speech and anything >= 6561 (the pad `<audio_6561>` and unnamed rows
    above it) is not.
    """

    endoftext: int
    im_end: int
    eot: int
    bot: int
    audio_start: int
    audio_end: int
    audio_patch: int
    tts_start: int
    tts_end: int
    audio_base: int
    tts_pad: int | None = None
    tool_call_start: int | None = None
    tool_call_end: int | None = None
    think_start: int | None = None
    think_end: int | None = None

    N_SPEECH_CODES = N_SPEECH_CODES

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> SpecialTokens:
        """Look every token up by string in a HF tokenizer (anything with `get_vocab()`)."""
        return cls.from_vocab(tokenizer.get_vocab())

    @classmethod
    def from_vocab(cls, vocab: Mapping[str, int]) -> SpecialTokens:
        missing = [token for token in _REQUIRED.values() if token not in vocab]
        if missing:
            raise SpecialTokenError(
                f"tokenizer lacks Step-Audio 2 special token(s): {', '.join(missing)}"
            )
        base_token = "<audio_0>"
        if base_token not in vocab:
            raise SpecialTokenError(f"tokenizer lacks Step-Audio 2 special token(s): {base_token}")
        base = vocab[base_token]
        for code in range(N_SPEECH_CODES + 1):
            token = f"<audio_{code}>"
            if vocab.get(token) != base + code:
                found = "missing" if token not in vocab else f"id {vocab[token]}"
                raise SpecialTokenError(
                    f"audio tokens must be contiguous from {base_token} (id {base}): "
                    f"{token} is {found}, expected id {base + code}"
                )
        ids = {name: vocab[token] for name, token in _REQUIRED.items()}
        optional = {name: vocab.get(token) for name, token in _OPTIONAL.items()}
        return cls(audio_base=base, **ids, **optional)

    @property
    def audio_pad(self) -> int:
        """Id of `<audio_6561>`, the audio-slot filler (never a speech code)."""
        return self.audio_base + N_SPEECH_CODES

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Ids that end generation: `<|EOT|>`, `<|endoftext|>`, `<|im_end|>` (spec d)."""
        return (self.eot, self.endoftext, self.im_end)

    def is_audio(self, token_id: int) -> bool:
        """True for audio-slot ids (speech codes and pads)."""
        return token_id >= self.audio_base

    def is_speech(self, token_id: int) -> bool:
        """True for ids carrying a speech code 0..6560."""
        return self.audio_base <= token_id < self.audio_pad

    def audio_code(self, token_id: int) -> int:
        """Code of an audio-slot id (>= 6561 means pad or invalid, not speech)."""
        if not self.is_audio(token_id):
            raise ValueError(f"token id {token_id} is not an audio token")
        return token_id - self.audio_base

    def audio_id(self, code: int) -> int:
        """Id of `<audio_{code}>` for code 0..6561."""
        if not 0 <= code <= N_SPEECH_CODES:
            raise ValueError(f"audio code {code} is outside 0..{N_SPEECH_CODES}")
        return self.audio_base + code


def load_tokenizer(model_dir: str | Path) -> Any:
    """The checkpoint's tokenizer files, without ever running code from the checkpoint.

    The released config.json carries an `auto_map`; `trust_remote_code=False` keeps transformers
    from asking (and waiting) whether to run it.
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
