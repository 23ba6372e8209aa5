"""Prompt codes: 16 kHz audio -> 128-bin log-mel -> speech_tokenizer_v2_25hz.onnx -> 25 Hz codes."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from tokenizer_audio.mel import slaney_mel_filters
from tokenizer_audio.speaker import open_onnx

SAMPLE_RATE = 16_000  # Hz
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms -> 100 Hz mel, 4 mel frames per code
N_MELS = 128
MAX_SECONDS = 30  # the tokenizer's positional range (30 s = 3000 mel frames)
N_CODES = 6561  # FSQ 3^8


@lru_cache(maxsize=4)
def _filters(device: str) -> torch.Tensor:
    return torch.from_numpy(slaney_mel_filters(SAMPLE_RATE, N_FFT, N_MELS)).to(device)


def log_mel_128(wav16k: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Whisper-style normalised log-mel [128, N // 160] of 16 kHz audio, no right pad (f.1)."""
    x = torch.as_tensor(wav16k, dtype=torch.float32).reshape(-1)
    window = torch.hann_window(N_FFT, periodic=True, device=x.device)
    spec = torch.stft(x, N_FFT, HOP, window=window, return_complex=True)
    power = spec[..., :-1].abs().pow(2)  # the last (centred) frame is dropped
    log_spec = torch.clamp(_filters(str(x.device)) @ power, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


class SpeechTokenizer:
    """speech_tokenizer_v2_25hz.onnx through onnxruntime: inputs (feats, feats_length) by order."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.path = Path(path)
        self._session = open_onnx(self.path, "speech tokenizer", threads)
        inputs = self._session.get_inputs()
        if len(inputs) != 2:
            names = [i.name for i in inputs]
            raise ValueError(f"{self.path}: expected inputs (feats, feats_length), found {names}")
        self._feats, self._lengths = inputs[0].name, inputs[1].name
        self._length_dtype = np.int64 if "int64" in inputs[1].type else np.int32

    def codes(self, wav16k: np.ndarray) -> np.ndarray:
        """16 kHz mono float samples (at most 30 s) -> codes int64 [~N / 640] in 0..6560."""
        if len(wav16k) > MAX_SECONDS * SAMPLE_RATE:
            raise ValueError(f"prompt audio longer than {MAX_SECONDS} s")
        mel = log_mel_128(wav16k).numpy()[None]
        out = self._session.run(None, {
            self._feats: mel.astype(np.float32),
            self._lengths: np.array([mel.shape[2]], dtype=self._length_dtype),
        })[0]
        codes = np.asarray(out).reshape(-1).astype(np.int64)
        if codes.size and (codes.min() < 0 or codes.max() >= N_CODES):
            raise ValueError(f"{self.path} produced codes outside 0..{N_CODES - 1}")
        return codes
