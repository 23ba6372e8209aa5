"""Kaldi-compatible 80-bin log filter-bank features of 16 kHz audio, for the speaker model (f.1)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16_000  # Hz
FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
N_FFT = 512  # frame length rounded up to a power of two
N_BINS = 80
LOW_FREQ = 20.0  # Hz; high edge = Nyquist
PREEMPHASIS = 0.97
_EPS = float(np.finfo(np.float32).eps)  # Kaldi's floor before the log


def _kaldi_mel(freq: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + freq / 700.0)


@lru_cache(maxsize=4)
def _mel_banks(device: str) -> torch.Tensor:
    """Kaldi MelBanks: triangles on the 1127 ln(1 + f/700) scale, [80, 257] (Nyquist bin 0)."""
    mel_low, mel_high = _kaldi_mel(np.array(LOW_FREQ)), _kaldi_mel(np.array(SAMPLE_RATE / 2))
    delta = (mel_high - mel_low) / (N_BINS + 1)
    mel = _kaldi_mel(np.arange(N_FFT // 2) * SAMPLE_RATE / N_FFT)[None, :]
    left = mel_low + np.arange(N_BINS)[:, None] * delta
    center, right = left + delta, left + 2 * delta
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.where((mel > left) & (mel < right), np.where(mel <= center, up, down), 0.0)
    banks = np.pad(banks, ((0, 0), (0, 1)))
    return torch.from_numpy(banks.astype(np.float32)).to(device)


@lru_cache(maxsize=4)
def _povey_window(device: str) -> torch.Tensor:
    n = torch.arange(FRAME_LENGTH, dtype=torch.float64)
    hann = 0.5 - 0.5 * torch.cos(2 * math.pi * n / (FRAME_LENGTH - 1))
    return hann.pow(0.85).to(torch.float32).to(device)


def kaldi_fbank(wav: np.ndarray | torch.Tensor) -> torch.Tensor:
    """16 kHz float samples [N] in [-1, 1] -> log mel energies [frames, 80] (Kaldi defaults).

    dither 0, snip edges (frames = 1 + (N - 400) // 160), DC removal, pre-emphasis 0.97, Povey
    window, 512-point power spectrum, 80 bins over 20 Hz..8 kHz, natural log, no energy term.
    """
    x = torch.as_tensor(wav, dtype=torch.float32).reshape(-1)
    if x.numel() < FRAME_LENGTH:
        return torch.zeros(0, N_BINS, device=x.device)
    frames = x.unfold(0, FRAME_LENGTH, FRAME_SHIFT)  # [F, 400]
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - PREEMPHASIS * previous
    frames = frames * _povey_window(str(x.device))
    power = torch.fft.rfft(frames, n=N_FFT).abs().pow(2)  # [F, 257]
    energies = power @ _mel_banks(str(x.device)).T
    return torch.log(torch.clamp(energies, min=_EPS))


def speaker_features(wav16k: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Speaker-model input: Kaldi fbank with the per-bin mean over time removed, [frames, 80]."""
    feats = kaldi_fbank(wav16k)
    return feats - feats.mean(dim=0, keepdim=True)
