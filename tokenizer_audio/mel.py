"""24 kHz 80-bin log-mel of flow targets and prompt mels (spec f.1), and Slaney filter banks."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

SAMPLE_RATE = 24_000  # Hz
N_FFT = 1920  # 80 ms window
HOP = 480  # 20 ms hop -> 50 Hz frames, one per 480 HiFT samples
N_MELS = 80
F_MAX = 8000.0  # Hz


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (librosa htk=False)."""
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    mels = freq / f_sp
    log_part = freq >= min_log_hz
    mels = np.where(
        log_part, min_log_hz / f_sp + np.log(np.maximum(freq, 1e-10) / min_log_hz) / logstep, mels
    )
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(
        mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels
    )


def slaney_mel_filters(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Slaney-normalised triangular mel filters [n_mels, n_fft // 2 + 1] (librosa's defaults)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel(np.array(fmin)), _hz_to_mel(np.array(fmax)), n_mels + 2)
    hz_pts = _mel_to_hz(mel_pts)
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_pts[2:n_mels + 2] - hz_pts[:n_mels]))[:, None]  # equal-area norm
    return weights.astype(np.float32)


@lru_cache(maxsize=8)
def _filters(device: str) -> torch.Tensor:
    return torch.from_numpy(slaney_mel_filters(SAMPLE_RATE, N_FFT, N_MELS, 0.0, F_MAX)).to(device)


@lru_cache(maxsize=8)
def _window(device: str) -> torch.Tensor:
    return torch.hann_window(N_FFT, periodic=True, device=device)


def mel_spectrogram(wav: np.ndarray | torch.Tensor) -> torch.Tensor:
    """24 kHz waveform [N] or [B, N] -> natural-log mel [80, T] or [B, 80, T] at 50 Hz (f.1).

    T = floor(N / 480): reflect-pad 720 samples each side, STFT without centring.
    """
    x = torch.as_tensor(wav, dtype=torch.float32)
    single = x.dim() == 1
    if single:
        x = x[None]
    pad = (N_FFT - HOP) // 2
    x = F.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]
    device = str(x.device)
    spec = torch.stft(x, N_FFT, HOP, N_FFT, window=_window(device), center=False,
                      return_complex=True)
    magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
    mel = torch.log(torch.clamp(torch.matmul(_filters(device), magnitude), min=1e-5))
    return mel[0] if single else mel
