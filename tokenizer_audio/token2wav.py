"""Codes -> 24 kHz speech in a voice's timbre: flow + HiFT, offline and streaming (f.1, f.5)."""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from tokenizer_audio.flow import Flow, FlowStream, Precision, VoicePrompt, load_flow
from tokenizer_audio.hift import HiFT, HiftCache, load_hift

if TYPE_CHECKING:
    from tokenizer_audio.voices import VoiceRegistry

CHUNK_CODES = 25  # new codes per streaming step: 1 s of audio (spec f.5)
VOICE_PROMPT_CACHE = 4  # voices kept ready; an 8 s prompt's caches take ~0.5 GB in fp32


class VoiceData(Protocol):
    """What token2wav needs from a voice (tokenizer_audio.voices.Voice has these fields)."""

    @property
    def content_hash(self) -> str: ...
    @property
    def prompt_codes(self) -> np.ndarray: ...  # int64 [N]
    @property
    def prompt_mel(self) -> np.ndarray: ...  # float32 [2N, 80]
    @property
    def xvector(self) -> np.ndarray: ...  # float32 [192]


def token2wav_dir(model_dir: str | Path) -> Path:
    """`Step-Audio-2-mini/` or its `token2wav/` folder -> the token2wav folder."""
    path = Path(model_dir)
    if (path / "token2wav" / "flow.yaml").is_file():
        return path / "token2wav"
    if (path / "flow.yaml").is_file():
        return path
    raise FileNotFoundError(f"{path} holds neither token2wav/flow.yaml nor flow.yaml")


@dataclass
class Token2wavStreamState:
    """One streaming synthesis: code buffer, flow caches and vocoder caches of one answer.

    `feed` and `finish` run synchronously in the calling thread; the worker drives the same
    object through `take_chunk` and `Token2wav.step` to batch several streams.
    """

    owner: Token2wav
    flow: FlowStream | None
    hift: HiftCache = field(default_factory=HiftCache)
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    buffer: list[int] = field(default_factory=list)
    finished: bool = False

    @property
    def active(self) -> bool:
        return self.flow is not None and not self.finished

    def push(self, codes: Sequence[int]) -> None:
        """Queue codes (0..vocab-1) for synthesis; a bad code is a ValueError, nothing queued."""
        if not self.active:
            raise RuntimeError("this token2wav stream is finished or cancelled")
        values = [int(c) for c in codes]
        vocab = self.owner.flow.dims.vocab_size
        bad = [c for c in values if not 0 <= c < vocab]
        if bad:
            raise ValueError(f"audio codes must be in 0..{vocab - 1}, got {bad[0]}")
        self.buffer.extend(values)

    def take_chunk(self, final: bool = False) -> tuple[list[int], bool] | None:
        """The next flow chunk (codes, last) if one is ready: 25 + look-ahead codes, or at
        `final` the remainder (spec f.5). The look-ahead codes stay in the buffer."""
        window = CHUNK_CODES + self.owner.flow.lookahead
        if len(self.buffer) >= window:
            chunk = self.buffer[:window]
            del self.buffer[:CHUNK_CODES]
            return chunk, False
        if final and self.buffer:
            chunk = self.buffer[:]
            self.buffer.clear()
            return chunk, True
        return None

    def feed(self, codes: Sequence[int]) -> np.ndarray:
        """Add codes; returns the audio (float32, 24 kHz) of every chunk that became ready."""
        self.push(codes)
        out = []
        while (chunk := self.take_chunk()) is not None:
            out.append(self.owner.step([self], [chunk])[0])
        return _concat(out)

    def finish(self) -> np.ndarray:
        """Synthesize what is left and the held-back tail; the stream ends."""
        if not self.active:
            raise RuntimeError("this token2wav stream is finished or cancelled")
        out = [self.feed([])]
        chunk = self.take_chunk(final=True)
        if chunk is not None:
            out.append(self.owner.step([self], [chunk])[0])
        elif self.hift.speech is not None:  # no codes left, but audio is held back
            out.append(self.hift.speech.float().cpu().numpy())
        self.release()
        return _concat(out)

    def cancel(self) -> None:
        """Drop everything at once: codes, flow and vocoder caches."""
        self.release()

    def release(self) -> None:
        self.finished = True
        self.flow = None
        self.buffer.clear()
        self.hift.reset()

    def nbytes(self) -> int:
        """Bytes this stream holds beyond its voice's shared prompt caches."""
        hift = sum(t.numel() * t.element_size() for t in
                   (self.hift.mel, self.hift.source, self.hift.speech) if t is not None)
        return (self.flow.nbytes() if self.flow is not None else 0) + hift


def _concat(parts: Sequence[np.ndarray]) -> np.ndarray:
    parts = [p for p in parts if p.size]
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


class Token2wav:
    """Loads a released token2wav/ folder; synthesizes offline or as streams.

    `precision` "fp32" reproduces the reference; "int8" (CPU) and "bf16" are faster, less
    exact modes of the flow (see Flow.use_precision). A voice's streaming prompt caches are
    computed once and shared by its streams.
    """

    def __init__(self, model_dir: str | Path, device: str | torch.device = "cpu",
                 precision: Precision = "fp32", *, voices_dir: str | Path | None = None,
                 noise_seed: int = 0, load_voices: bool = True) -> None:
        self.dir = token2wav_dir(model_dir)
        self.device = torch.device(device)
        self.precision = precision
        # Reduced precision touches the flow's matrix products only; norms, the ODE state and
        # HiFT (a small share of the time) stay fp32.
        self.flow: Flow = load_flow(self.dir / "flow.yaml", self.dir / "flow.pt", device,
                                    torch.float32, noise_seed=noise_seed).use_precision(precision)
        sys.stderr.write(f"loading HiFT from {self.dir / 'hift.pt'}\n")
        self.hift: HiFT = load_hift(self.dir / "hift.pt", device, torch.float32)
        self.voices: VoiceRegistry | None = None
        if load_voices:
            from tokenizer_audio.voices import VoiceRegistry

            self.voices = VoiceRegistry(self.dir, voices_dir)
        self._prompts: OrderedDict[str, VoicePrompt] = OrderedDict()

    def _voice(self, voice: VoiceData | str) -> VoiceData:
        if isinstance(voice, str):
            if self.voices is None:
                raise ValueError("this Token2wav was built without a voice registry")
            return self.voices.get(voice)
        return voice

    def voice_prompt(self, voice: VoiceData | str) -> VoicePrompt:
        """The voice's streaming prompt caches (spec f.5 set-up), computed once and kept."""
        data = self._voice(voice)
        key = data.content_hash
        if key in self._prompts:
            self._prompts.move_to_end(key)
            return self._prompts[key]
        prompt = self.flow.prepare_voice(
            torch.tensor(np.asarray(data.prompt_codes), dtype=torch.long),
            torch.tensor(np.asarray(data.prompt_mel), dtype=torch.float32),
            torch.tensor(np.asarray(data.xvector), dtype=torch.float32),
        )
        self._prompts[key] = prompt
        while len(self._prompts) > VOICE_PROMPT_CACHE:
            self._prompts.popitem(last=False)
        return prompt

    @torch.inference_mode()
    def offline(self, codes: Sequence[int], voice: VoiceData | str,
                generator: torch.Generator | None = None) -> np.ndarray:
        """All codes at once -> float32 24 kHz waveform (480 samples per mel frame)."""
        data = self._voice(voice)
        mel = self.flow.inference(
            torch.tensor(np.asarray(data.prompt_codes), dtype=torch.long),
            torch.tensor(np.asarray(data.prompt_mel), dtype=torch.float32),
            torch.tensor(np.asarray(data.xvector), dtype=torch.float32),
            list(codes),
        )
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        wav = self.hift(mel.unsqueeze(0), generator)[0]
        return wav.float().cpu().numpy()

    def stream(self, voice: VoiceData | str, seed: int = 0) -> Token2wavStreamState:
        """A new stream in this voice; `seed` fixes the vocoder's source noise."""
        return Token2wavStreamState(
            owner=self, flow=FlowStream.start(self.voice_prompt(voice)),
            generator=torch.Generator().manual_seed(seed))

    @torch.inference_mode()
    def step(self, states: Sequence[Token2wavStreamState],
             chunks: Sequence[tuple[list[int], bool]]) -> list[np.ndarray]:
        """Run one chunk for each of several streams (the DiT and HiFT batched across them);
        returns each stream's new audio, float32 24 kHz."""
        flows = []
        for state in states:
            if state.flow is None:
                raise RuntimeError("this token2wav stream is finished or cancelled")
            flows.append(state.flow)
        mels = self.flow.stream_step(flows, [c for c, _ in chunks], [last for _, last in chunks])
        lasts = [last for _, last in chunks]
        wavs = self.hift.vocode_chunks(mels, [s.hift for s in states], lasts,
                                       [s.generator for s in states])
        for state, last in zip(states, lasts, strict=True):
            if last:
                state.finished = True
        return [wav.float().cpu().numpy() for wav in wavs]
