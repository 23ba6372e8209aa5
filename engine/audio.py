"""Audio front end for the Step-Audio 2 encoder: 25 s chunks, 128-bin log-mels, lengths (spec c)."""

from __future__ import annotations

import functools
import math
from typing import TypeVar

import numpy as np
import torch

SAMPLE_RATE = 16_000  # Hz, encoder input
CHUNK_SAMPLES = 400_000  # 25 s: one prompt audio group and one encoder item per piece
N_FFT = 400  # 25 ms window
HOP_LENGTH = 160  # 10 ms hop: mel frames at 100 Hz
N_MELS = 128
RIGHT_PAD = 479  # zeros appended before the STFT (spec c); gives two extra frames
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0  # log10 units kept below the chunk maximum
PAD_VALUE = 0.0  # batch padding, in normalised log-mel units
MAX_ENCODER_FRAMES = 3000  # 1500 positional rows after the stride-2 conv
MAX_CHUNK_SAMPLES = 479_680  # longest chunk whose mel fits MAX_ENCODER_FRAMES (~29.98 s)

_IntOrTensor = TypeVar("_IntOrTensor", int, torch.Tensor)


def split_chunks(samples: np.ndarray) -> list[np.ndarray]:
    """Cut 16 kHz mono audio into consecutive 25 s pieces (the last one shorter); views, no copy."""
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"expected mono audio of shape [N], got shape {tuple(samples.shape)}")
    return [samples[i : i + CHUNK_SAMPLES] for i in range(0, len(samples), CHUNK_SAMPLES)]


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    freq = np.asarray(freq, dtype=np.float64)
    mels = freq / f_sp
    above = freq >= min_log_hz
    mels[above] = min_log_mel + np.log(freq[above] / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    mels = np.asarray(mels, dtype=np.float64)
    freqs = mels * f_sp
    above = mels >= min_log_mel
    freqs[above] = min_log_hz * np.exp(logstep * (mels[above] - min_log_mel))
    return freqs


def mel_filters_np(
    sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS
) -> np.ndarray:
    """Slaney-normalised triangular mel filters [n_mels, n_fft // 2 + 1], float32, 0..sr/2 Hz.

    Same construction as `librosa.filters.mel(sr, n_fft, n_mels)` (computed in float64).
    """
    fft_freqs = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    mel_min, mel_max = _hz_to_mel(np.array([0.0, sample_rate / 2]))
    mel_f = _mel_to_hz(np.linspace(mel_min, mel_max, n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]  # area normalisation
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _mel_filters(device: torch.device) -> torch.Tensor:
    return torch.from_numpy(mel_filters_np()).to(device)


@functools.lru_cache(maxsize=8)
def _window(device: torch.device) -> torch.Tensor:
    return torch.hann_window(N_FFT, periodic=True, device=device)


def num_mel_frames(n_samples: int) -> int:
    """Mel frames `log_mel` gives for `n_samples` samples: floor((N + 479) / 160)."""
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    return (n_samples + RIGHT_PAD) // HOP_LENGTH


def log_mel(samples: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Normalised 128-bin log-mel of one chunk of 16 kHz mono audio: float32 [128, T] at 100 Hz.

    Whisper recipe with a 479-sample right pad and the last STFT frame dropped (spec c), so
    T = num_mel_frames(N). Computed on the input tensor's device.
    """
    audio = torch.as_tensor(samples)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio of shape [N], got shape {tuple(audio.shape)}")
    audio = torch.nn.functional.pad(audio.to(torch.float32), (0, RIGHT_PAD))
    spec = torch.stft(
        audio, N_FFT, HOP_LENGTH, window=_window(audio.device), center=True,
        pad_mode="reflect", return_complex=True,
    )
    power = spec[..., :-1].abs() ** 2
    mel = _mel_filters(audio.device) @ power
    logs = torch.clamp(mel, min=LOG_FLOOR).log10()
    logs = torch.maximum(logs, logs.max() - DYNAMIC_RANGE)
    return (logs + 4.0) / 4.0


def encoder_input_length(n_frames: int) -> int:
    """Valid encoder length of a [128, T] mel: T - 2 (HF rule, spec c), i.e. ceil(N / 160)."""
    return max(n_frames - 2, 0)


def mel_frames_of_item(len_in: _IntOrTensor) -> _IntOrTensor:
    """The mel length of an item whose valid encoder length is `len_in` (inverse of the above)."""
    return len_in + 2


def encoder_output_length(len_in: _IntOrTensor) -> _IntOrTensor:
    """Encoder frames (25 Hz) for `len_in` valid mel frames: stride-2 conv, then pool by 2."""
    return (len_in + 1) // 2 // 2


def adapter_output_length(
    len_enc: _IntOrTensor, kernel_size: int = 3, stride: int = 2
) -> _IntOrTensor:
    """Adapter frames (12.5 Hz) for `len_enc` encoder frames (conv padded by (k - 1) // 2).

    0 encoder frames give 0 adapter frames.
    """
    padding = (kernel_size - 1) // 2
    out = (len_enc + 2 * padding - kernel_size) // stride + 1
    return out.clamp(min=0) if isinstance(out, torch.Tensor) else max(out, 0)


def placeholder_count(n_samples: int, kernel_size: int = 3, stride: int = 2) -> int:
    """`<audio_patch>` tokens for a chunk of `n_samples` samples: also the adapter's output length.

    HF rule (spec c): 1 s -> 13, 25 s -> 313. Raises ValueError for an empty or too long chunk.
    """
    if not 0 < n_samples <= MAX_CHUNK_SAMPLES:
        raise ValueError(
            f"an audio chunk must have 1..{MAX_CHUNK_SAMPLES} samples at 16 kHz, got {n_samples}"
        )
    len_in = encoder_input_length(num_mel_frames(n_samples))
    return adapter_output_length(encoder_output_length(len_in), kernel_size, stride)


def batch_mels(mels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack [128, T_k] mels right-padded with 0.0: (mels [B, 128, T_max], lengths [B] int64).

    `lengths` are the valid encoder input lengths, `encoder_input_length(T_k)`.
    """
    if not mels:
        raise ValueError("batch_mels needs at least one mel")
    for mel in mels:
        if mel.ndim != 2 or mel.shape[0] != N_MELS:
            raise ValueError(f"expected a mel of shape [{N_MELS}, T], got {tuple(mel.shape)}")
    t_max = max(mel.shape[1] for mel in mels)
    out = mels[0].new_full((len(mels), N_MELS, t_max), PAD_VALUE)
    for i, mel in enumerate(mels):
        out[i, :, : mel.shape[1]] = mel
    lengths = torch.tensor([encoder_input_length(mel.shape[1]) for mel in mels], dtype=torch.long)
    return out, lengths
