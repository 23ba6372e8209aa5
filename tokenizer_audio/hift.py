"""HiFT vocoder (spec f.4): 50 Hz 80-bin mel -> 24 kHz waveform, offline and streaming (f.5)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

Generators = torch.Generator | Sequence[torch.Generator | None] | None
SAMPLES_PER_FRAME = 480  # 24 kHz samples per 50 Hz mel frame (8 * 5 * 3 * istft hop 4)
STREAM_MEL_CACHE = 8  # mel frames re-vocoded at the start of every streaming call (f.5)
STREAM_SAMPLE_CACHE = STREAM_MEL_CACHE * SAMPLES_PER_FRAME  # 3840 source / output samples


@dataclass(frozen=True)
class HiftDims:
    """HiFT hyper-parameters; defaults are the released 24 kHz vocoder (f.4)."""

    in_channels: int = 80
    base_channels: int = 512
    f0_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 24_000
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    voiced_threshold: float = 10.0
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    upsample_kernel_sizes: tuple[int, ...] = (16, 11, 7)
    n_fft: int = 16
    hop: int = 4
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 7, 11)
    source_resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99

    @property
    def upsample_total(self) -> int:
        """Output samples per mel frame (480 for the defaults)."""
        return math.prod(self.upsample_rates) * self.hop

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> HiftDims:
        """Channel counts and kernel sizes read from tensor shapes (canonical key spelling)."""
        pre = state["conv_pre.parametrizations.weight.original1"].shape  # [base, mel, 7]
        f0 = state["f0_predictor.condnet.0.parametrizations.weight.original1"].shape
        n_res = len(cls.resblock_kernel_sizes)
        n_src = len(cls.source_resblock_kernel_sizes)
        res_k = tuple(
            int(state[f"resblocks.{j}.convs1.0.parametrizations.weight.original1"].shape[2])
            for j in range(n_res)
        )
        src_k = tuple(
            int(state[f"source_resblocks.{i}.convs1.0.parametrizations.weight.original1"].shape[2])
            for i in range(n_src)
        )
        ups_k = tuple(
            int(state[f"ups.{i}.parametrizations.weight.original1"].shape[2])
            for i in range(len(cls.upsample_rates))
        )
        return cls(
            in_channels=int(pre[1]),
            base_channels=int(pre[0]),
            f0_channels=int(f0[0]),
            nb_harmonics=int(state["m_source.l_linear.weight"].shape[1]) - 1,
            n_fft=int(state["conv_post.parametrizations.weight.original1"].shape[0]) - 2,
            upsample_kernel_sizes=ups_k,
            resblock_kernel_sizes=res_k,
            source_resblock_kernel_sizes=src_k,
        )


def _time_major(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T] -> [B, C, 1, T] stored time-major (channels_last): oneDNN runs these long,
    narrow convolutions 1.3-1.8x faster in that layout than as Conv1d."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def _conv(module: nn.Conv1d | nn.ConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    """A Conv1d / ConvTranspose1d applied to a time-major [B, C, 1, T] tensor, as its 2-D twin."""
    weight = module.weight.unsqueeze(2)
    stride, padding = (1, module.stride[0]), (0, module.padding[0])
    dilation = (1, module.dilation[0])
    if isinstance(module, nn.ConvTranspose1d):
        return F.conv_transpose2d(x, weight, module.bias, stride, padding,
                                  (0, module.output_padding[0]), 1, dilation)
    return F.conv2d(x, weight, module.bias, stride, padding, dilation)


def _wn(module: nn.Module) -> nn.Module:
    # Weight norm stays a parametrization until load so the names equal hift.pt's (f.7).
    return weight_norm(module)


class Snake(nn.Module):
    """x + sin^2(alpha x) / (alpha + 1e-9) with a per-channel alpha; input [B, C, ...]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.view(1, -1, *[1] * (x.dim() - 2))
        # In place on one temporary: these tensors are large (samples x channels), and each
        # fresh allocation costs page faults on top of the pass itself.
        wave = torch.mul(x, alpha).sin_().square_()
        return torch.addcmul(x, wave, 1.0 / (alpha + 1e-9))


class ResBlock(nn.Module):
    """Three residual [Snake, dilated conv, Snake, conv] units."""

    def __init__(self, channels: int, kernel: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            _wn(nn.Conv1d(channels, channels, kernel, dilation=d, padding=(kernel * d - d) // 2))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            _wn(nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2))
            for _ in dilations
        )
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: time-major [B, C, 1, T] (see _time_major)."""
        for conv1, conv2, act1, act2 in zip(
            self.convs1, self.convs2, self.activations1, self.activations2, strict=True
        ):
            x = _conv(conv2, act2(_conv(conv1, act1(x)))).add_(x)
        return x


class F0Predictor(nn.Module):
    """Five conv+ELU layers and a linear head: one |F0| in Hz per mel frame."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [_wn(nn.Conv1d(in_channels if i == 0 else channels, channels, 3, padding=1)),
                       nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, 80, T] -> f0 [B, T]."""
        return self.classifier(self.condnet(mel).transpose(1, 2)).squeeze(-1).abs()


class SourceModule(nn.Module):
    """Harmonic-plus-noise excitation from F0 (neural source filter), merged to one channel."""

    def __init__(self, dims: HiftDims) -> None:
        super().__init__()
        self.dims = dims
        self.l_linear = nn.Linear(dims.nb_harmonics + 1, 1)

    def forward(self, f0: torch.Tensor, noise_scale: float, generator: Generators) -> torch.Tensor:
        """f0 [B, T] per frame -> source [B, 1, T * 480] (phases in fp32 whatever the dtype).

        `generator`: one for the whole batch, or a sequence with one per row (each row then draws
        exactly the noise it would draw alone).
        """
        d = self.dims
        up = d.upsample_total
        f0 = f0.float()
        harmonics = torch.arange(1, d.nb_harmonics + 2, device=f0.device, dtype=f0.dtype)
        # Phase increments are constant within a frame, so the reference's sample-rate increments
        # linearly downsampled by 480 equal the per-frame ones; its random initial phases sit at
        # sample 0, which that downsampling never reads (f.5a.3), so they are zero here.
        rad = (f0[:, :, None] * harmonics / d.sampling_rate) % 1  # [B, T, H]
        phase = torch.cumsum(rad, dim=1) * 2 * math.pi
        phase = F.interpolate(phase.transpose(1, 2) * up, scale_factor=up, mode="linear")
        sines = torch.sin(phase) * d.nsf_alpha  # [B, H, T*up]
        f0_up = f0.repeat_interleave(up, dim=1)[:, None, :]  # nearest upsampling, [B, 1, T*up]
        voiced = (f0_up > d.voiced_threshold).to(sines.dtype)
        sines = sines * voiced
        if noise_scale:
            noise_amp = voiced * d.nsf_sigma + (1 - voiced) * d.nsf_alpha / 3
            if isinstance(generator, Sequence):
                noise = torch.stack([
                    torch.randn(sines.shape[1:], generator=g, device=sines.device,
                                dtype=sines.dtype)
                    for g in generator
                ])
            else:
                noise = torch.randn(
                    sines.shape, generator=generator, device=sines.device, dtype=sines.dtype
                )
            sines = sines + noise_scale * noise_amp * noise
        sines = sines.transpose(1, 2).to(self.l_linear.weight.dtype)
        return torch.tanh(self.l_linear(sines)).transpose(1, 2)


class HiFT(nn.Module):
    """HiFT generator: NSF source + upsampling ISTFT decoder. Parameter names = hift.pt's.

    `noise_scale` scales the additive source noise (1.0 as trained, 0.0 for bit-exact tests);
    pass a seeded `torch.Generator` to `forward`/`source` for reproducible noise.
    """

    def __init__(self, dims: HiftDims | None = None) -> None:
        super().__init__()
        d = self.dims = dims or HiftDims()
        self.noise_scale = 1.0
        self.m_source = SourceModule(d)
        self.conv_pre = _wn(nn.Conv1d(d.in_channels, d.base_channels, 7, padding=3))
        self.ups = nn.ModuleList(
            _wn(nn.ConvTranspose1d(d.base_channels // 2**i, d.base_channels // 2 ** (i + 1),
                                   k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(d.upsample_rates, d.upsample_kernel_sizes, strict=True))
        )
        stft_ch = d.n_fft + 2
        # Source branch i meets the decoder after stage i, at rate prod(rates[i+1:]) below output.
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, (k, dil) in enumerate(
            zip(d.source_resblock_kernel_sizes, d.source_resblock_dilations, strict=True)
        ):
            ch = d.base_channels // 2 ** (i + 1)
            stride = math.prod(d.upsample_rates[i + 1:])
            if stride == 1:
                self.source_downs.append(nn.Conv1d(stft_ch, ch, 1))
            else:
                self.source_downs.append(
                    nn.Conv1d(stft_ch, ch, stride * 2, stride, padding=stride // 2)
                )
            self.source_resblocks.append(ResBlock(ch, k, dil))
        self.resblocks = nn.ModuleList(
            ResBlock(d.base_channels // 2 ** (i + 1), k, dil)
            for i in range(len(d.upsample_rates))
            for k, dil in zip(d.resblock_kernel_sizes, d.resblock_dilations, strict=True)
        )
        last_ch = d.base_channels // 2 ** len(d.upsample_rates)
        self.conv_post = _wn(nn.Conv1d(last_ch, stft_ch, 7, padding=3))
        self.f0_predictor = F0Predictor(d.in_channels, d.f0_channels)
        self.register_buffer(
            "stft_window", torch.hann_window(d.n_fft, periodic=True), persistent=False
        )

    def source(self, mel: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """mel [B, 80, T] -> excitation [B, 1, 480 T]."""
        return self.m_source(self.f0_predictor(mel), self.noise_scale, generator)

    def decode(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """mel [B, 80, T] and excitation [B, 1, 480 T] -> waveform [B, 480 T] in +-0.99."""
        d = self.dims
        window = self.stft_window.float()  # the STFTs run in fp32 in every mode
        spec = torch.stft(source[:, 0].float(), d.n_fft, d.hop, d.n_fft, window=window,
                          return_complex=True)
        # [B, n_fft + 2, frames], then every convolution runs time-major (see _time_major).
        s_stft = _time_major(torch.cat([spec.real, spec.imag], dim=1).to(mel.dtype))
        x = _conv(self.conv_pre, _time_major(mel))
        n_kernels = len(d.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = _conv(up, F.leaky_relu(x, d.lrelu_slope))
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0, 0, 0), mode="reflect")
            x = x + self.source_resblocks[i](_conv(self.source_downs[i], s_stft))
            blocks = self.resblocks[i * n_kernels:(i + 1) * n_kernels]
            x = sum(block(x) for block in blocks) / n_kernels
        x = _conv(self.conv_post, F.leaky_relu(x, 0.01))  # slope 0.01 here, as trained (f.4)
        bins = d.n_fft // 2 + 1
        x = x.squeeze(2).float()
        magnitude = torch.exp(x[:, :bins]).clamp(max=1e2)
        phase = torch.sin(x[:, bins:])
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        wav = torch.istft(spec, d.n_fft, d.hop, d.n_fft, window=window)
        return wav.clamp(-d.audio_limit, d.audio_limit).to(mel.dtype)

    def forward(self, mel: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """mel [B, 80, T] (log-mel at 50 Hz) -> waveform [B, 480 T] at 24 kHz."""
        return self.decode(mel, self.source(mel, generator))

    def fold_weight_norm(self) -> None:
        """Replace every weight-norm parametrization by its plain weight g * v / ||v||."""
        for module in self.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)

    def vocode_chunk(
        self,
        mel_chunk: torch.Tensor,
        cache: HiftCache,
        last: bool,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Vocode the next streamed mel chunk; returns samples [n] ready to play (model dtype).

        `mel_chunk` is [80, t] or [1, 80, t]. `cache` is updated in place (f.5): the last 8 mel
        frames are vocoded again in front of the chunk, the first 3840 source samples are replaced
        by the cached ones (phase continuity), the first 3840 output samples are Hamming
        cross-faded with the previous tail, and the last 3840 samples are held back unless `last`.
        """
        return self.vocode_chunks([mel_chunk], [cache], [last], [generator])[0]

    @torch.inference_mode()
    def vocode_chunks(
        self,
        mel_chunks: Sequence[torch.Tensor],
        caches: Sequence[HiftCache],
        lasts: Sequence[bool],
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> list[torch.Tensor]:
        """`vocode_chunk` for several streams at once: streams whose cached + new mel lengths are
        equal run as one batch. Each cache is updated in place; results in input order."""
        n = len(mel_chunks)
        if not len(caches) == len(lasts) == n or (generators is not None and len(generators) != n):
            raise ValueError("vocode_chunks needs one cache, last flag and generator per chunk")
        gens = list(generators) if generators is not None else [None] * n
        mels = []
        for chunk, cache in zip(mel_chunks, caches, strict=True):
            chunk = chunk[None] if chunk.dim() == 2 else chunk
            mels.append(chunk if cache.mel is None else torch.cat([cache.mel, chunk], dim=2))
        groups: dict[int, list[int]] = {}
        for i, mel in enumerate(mels):
            groups.setdefault(mel.shape[2], []).append(i)
        out: list[torch.Tensor] = [torch.empty(0)] * n
        for rows in groups.values():
            mel = torch.cat([mels[i] for i in rows])
            src = self.source(mel, [gens[i] for i in rows])
            for row, i in enumerate(rows):
                cached = caches[i].source
                if cached is not None:
                    src[row, :, :cached.shape[2]] = cached[0]
            speech = self.decode(mel, src)
            for row, i in enumerate(rows):
                out[i] = self._finish_chunk(
                    mel[row:row + 1], src[row:row + 1], speech[row], caches[i], lasts[i]
                )
        return out

    @staticmethod
    def _finish_chunk(mel: torch.Tensor, src: torch.Tensor, speech: torch.Tensor,
                      cache: HiftCache, last: bool) -> torch.Tensor:
        """Cross-fade with the previous tail, update the cache, hold back the new tail."""
        if cache.speech is not None:
            n = cache.speech.shape[0]
            window = _fade_window(2 * STREAM_SAMPLE_CACHE, speech.device)
            head = speech[:n] * window[:n] + cache.speech * window[n:2 * n]  # float64, as ref
            speech = torch.cat([head.to(speech.dtype), speech[n:]])
        cache.mel = mel[:, :, -STREAM_MEL_CACHE:].clone()
        cache.source = src[:, :, -STREAM_SAMPLE_CACHE:].clone()
        cache.speech = speech[-STREAM_SAMPLE_CACHE:].clone()
        return speech if last else speech[:-STREAM_SAMPLE_CACHE]


@dataclass
class HiftCache:
    """Vocoder state of one stream between `HiFT.vocode_chunk` calls (f.5); None = no audio yet."""

    mel: torch.Tensor | None = field(default=None)  # [1, 80, <=8] last mel frames vocoded
    source: torch.Tensor | None = field(default=None)  # [1, 1, <=3840] last excitation samples
    speech: torch.Tensor | None = field(default=None)  # [<=3840] last output samples (held back)

    def reset(self) -> None:
        self.mel = self.source = self.speech = None


_WINDOWS: dict[tuple[int, str], torch.Tensor] = {}


def _fade_window(length: int, device: torch.device) -> torch.Tensor:
    """Symmetric float64 Hamming window (the reference's np.hamming), cached per device."""
    key = (length, str(device))
    if key not in _WINDOWS:
        _WINDOWS[key] = torch.from_numpy(np.hamming(length)).to(device)
    return _WINDOWS[key]


_PREFIX = "generator."
_OLD_WN = re.compile(r"\.weight_(g|v)$")


def canonical_hift_key(key: str) -> str:
    """Map any of the four hift.pt spellings (f.7) onto the parametrized, prefix-free one."""
    if key.startswith(_PREFIX):
        key = key[len(_PREFIX):]
    return _OLD_WN.sub(
        lambda m: ".parametrizations.weight.original" + ("0" if m.group(1) == "g" else "1"), key
    )


def canonical_hift_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict under canonical names; two keys mapping to one name is an error."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = canonical_hift_key(key)
        if name in out:
            raise ValueError(f"hift.pt holds {name!r} twice (under two spellings)")
        out[name] = value
    return out


def load_hift(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> HiFT:
    """Load hift.pt (any key spelling of f.7), infer its dims, fold weight norm; eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HiFT checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise ValueError(f"cannot read HiFT checkpoint {path}: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path} is not a state dict")
    state = canonical_hift_state(raw)
    try:
        dims = HiftDims.from_state_dict(state)
    except KeyError as exc:
        raise ValueError(f"{path} is not a HiFT checkpoint: missing {exc}") from exc
    model = HiFT(dims)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"{path} does not match the HiFT layout: {exc}") from exc
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the HiFT layout: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    model.fold_weight_norm()
    return model.to(device=device, dtype=dtype).eval()
