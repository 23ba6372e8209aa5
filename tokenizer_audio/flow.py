"""The flow model (spec f.3): codes + voice -> 80-bin mel, offline and streaming (f.5, f.5a)."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer_audio.conformer import ConformerCache, UpsampleConformerEncoder
from tokenizer_audio.dit import DiT, DitStepCache, StepConditioning
from tokenizer_audio.flow_config import FlowDims, load_flow_yaml
from tokenizer_audio.int8 import quantize_dit_

N_TIMESTEPS = 10  # Euler steps (spec f.2, call-site constant)
NOISE_FRAMES = 50 * 600  # the fixed noise buffer covers 600 s of mel (spec f.3 step 6)
DIT_KEEP_TAIL = 100  # frames kept at the end of the DiT cache when trimming (spec f.5)
CONFORMER_MAX_TOKENS = 2000  # beyond this the encoder cache keeps the prompt + newest tokens
Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")


class FlowLoadError(RuntimeError):
    """flow.pt is missing, unreadable, or does not match flow.yaml."""


@dataclass(frozen=True)
class VoicePrompt:
    """Everything streaming needs from one voice; computed once, shared read-only by streams."""

    spk: torch.Tensor  # [1, 80] projected speaker embedding
    conformer: ConformerCache  # encoder caches after the prompt codes
    steps: tuple[DitStepCache, ...]  # per ODE step: the prompt's DiT keys/values and conv tails
    prompt_tokens: int
    prompt_frames: int  # mel frames = up_rate * prompt_tokens

    def nbytes(self) -> int:
        return self.conformer.nbytes() + sum(step.nbytes() for step in self.steps)


@dataclass
class FlowStream:
    """One stream's flow state: the voice's shared prompt plus this stream's own additions."""

    voice: VoicePrompt
    conformer: ConformerCache
    steps: list[DitStepCache]
    chunks: int = 0
    finished: bool = field(default=False)

    @classmethod
    def start(cls, voice: VoicePrompt) -> FlowStream:
        return cls(voice=voice, conformer=voice.conformer, steps=list(voice.steps))

    @property
    def dit_frames(self) -> int:
        """Frames each DiT step cache holds (the reference's noise offset, spec f.5a.2)."""
        return self.steps[0].length

    def nbytes(self) -> int:
        """Bytes held by this stream beyond the voice's shared prompt caches."""
        def storage(t: torch.Tensor) -> int:
            return t.untyped_storage().data_ptr()

        shared = {storage(s.k) for step in self.voice.steps for s in step.spans}
        own = sum(s.k.numel() * s.k.element_size() * 2 for step in self.steps
                  for s in step.spans if storage(s.k) not in shared)
        conv = sum(step.conv.numel() * step.conv.element_size() for step in self.steps)
        return own + conv + self.conformer.nbytes()


_Step = tuple[StepConditioning, torch.Tensor]  # the DiT's modulations at t, and dt


class CausalCFM(nn.Module):
    """Conditional flow matching sampler around the DiT: fixed noise, cosine times, CFG."""

    def __init__(self, dims: FlowDims, noise_seed: int) -> None:
        super().__init__()
        self.estimator = DiT(dims.dit)
        self.cfg_rate = dims.inference_cfg_rate
        self.register_buffer("rand_noise", self.make_noise(dims.output_size, noise_seed),
                             persistent=False)
        self._steps: tuple[tuple[int, ...], list[_Step]] | None = None

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - nn.Module's own signature
        self._steps = None  # .to() / .half() replace the weights the cached modulations used
        return super()._apply(fn, recurse)

    def steps(self, like: torch.Tensor) -> list[_Step]:
        """(DiT modulations, dt) per Euler step.

        The modulations depend only on t and the weights, not on the stream, so they are
        computed once and reused by every chunk (keyed on the weights' version counters, which
        load_state_dict and in-place edits bump).
        """
        dit = self.estimator
        params = [*dit.t_embedder.parameters(), *dit.final_layer.adaLN_modulation.parameters(),
                  *(p for block in dit.blocks for p in block.adaLN_modulation.parameters())]
        key = tuple(p._version for p in params)
        if self._steps is None or self._steps[0] != key:
            self._steps = (key, [(dit.conditioning(t), dt) for t, dt in self.time_steps(like)])
        return self._steps[1]

    @staticmethod
    def make_noise(channels: int, seed: int) -> torch.Tensor:
        """The fixed Gaussian noise [1, channels, NOISE_FRAMES] every sampling starts from."""
        generator = torch.Generator().manual_seed(seed)
        return torch.randn([1, channels, NOISE_FRAMES], generator=generator)

    def time_steps(self, like: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(t, dt) per Euler step, with the reference's accumulation of t in `like`'s dtype."""
        span = torch.linspace(0, 1, N_TIMESTEPS + 1, device=like.device, dtype=like.dtype)
        span = 1 - torch.cos(span * 0.5 * math.pi)
        t, dt = span[0].unsqueeze(0), span[1] - span[0]
        out = []
        for step in range(1, N_TIMESTEPS + 1):
            out.append((t, dt))
            t = t + dt
            if step < N_TIMESTEPS:
                dt = span[step + 1] - t
        return out

    def noise(self, offset: int, frames: int) -> torch.Tensor:
        if offset + frames > self.rand_noise.shape[2]:
            raise ValueError(f"flow noise buffer holds {self.rand_noise.shape[2]} frames, "
                             f"{offset + frames} needed")
        return self.rand_noise[:, :, offset:offset + frames]

    def _guided(self, v: torch.Tensor) -> torch.Tensor:
        return (1.0 + self.cfg_rate) * v[0::2] - self.cfg_rate * v[1::2]

    @staticmethod
    def _cfg_rows(x: torch.Tensor) -> torch.Tensor:
        """[S, ...] conditional inputs -> [2S, ...] with zeros for the unconditional rows."""
        return torch.stack([x, torch.zeros_like(x)], dim=1).flatten(0, 1)

    def forward(self, mu: torch.Tensor, spk: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Offline sampling. mu, cond: [1, 80, T]; spk: [1, 80] -> mel [1, 80, T]."""
        x = self.noise(0, mu.shape[2])  # the ODE state keeps the noise's dtype (fp32)
        mu_in, spk_in, cond_in = self._cfg_rows(mu), self._cfg_rows(spk), self._cfg_rows(cond)
        for step, dt in self.steps(x):
            v = self.estimator(x.repeat_interleave(2, 0), mu_in, step, spk_in, cond_in)
            x = x + dt * self._guided(v)
        return x

    def forward_chunk(self, mu: torch.Tensor, spk: torch.Tensor, cond: torch.Tensor,
                      offsets: Sequence[int], caches: Sequence[Sequence[DitStepCache]]
                      ) -> tuple[torch.Tensor, list[list[DitStepCache]]]:
        """Streaming sampling of S streams' chunks of equal length T.

        mu, cond: [S, 80, T]; spk: [S, 80]; offsets: noise offset per stream; caches: per stream,
        one step cache per ODE step. Returns mel [S, 80, T] and the new per-stream step caches.
        """
        frames = mu.shape[2]
        x = torch.cat([self.noise(off, frames) for off in offsets], dim=0)
        mu_in, spk_in, cond_in = self._cfg_rows(mu), self._cfg_rows(spk), self._cfg_rows(cond)
        new: list[list[DitStepCache]] = [[] for _ in offsets]
        for k, (step, dt) in enumerate(self.steps(x)):
            v, step_caches = self.estimator.forward_chunk(
                x.repeat_interleave(2, 0), mu_in, step, spk_in, cond_in,
                [stream[k] for stream in caches])
            x = x + dt * self._guided(v)
            for s, cache in enumerate(step_caches):
                new[s].append(cache)
        return x, new


class Flow(nn.Module):
    """Input embedding, speaker affine, conformer encoder, projection, CFM with DiT.

    Parameter names equal flow.pt's (spec f.7). `noise_seed` fixes the CFM noise buffer, which
    the checkpoint does not store.
    """

    def __init__(self, dims: FlowDims, noise_seed: int = 0) -> None:
        super().__init__()
        self.dims = dims.validate()
        self.input_embedding = nn.Embedding(dims.vocab_size, dims.input_size)
        self.spk_embed_affine_layer = nn.Linear(dims.spk_embed_dim, dims.output_size)
        self.encoder = UpsampleConformerEncoder(dims.encoder)
        self.encoder_proj = nn.Linear(dims.encoder.output_size, dims.output_size)
        self.decoder = CausalCFM(dims, noise_seed)
        self.matmul_dtype: torch.dtype | None = None

    def use_matmul_dtype(self, dtype: torch.dtype | None) -> Flow:
        """Run matrix products (Linear, Conv1d, matmul, attention) in `dtype` (e.g. bfloat16)
        through autocast; LayerNorms, softmax, the noise and the Euler state stay fp32.
        A faster, less exact mode: `None` (the default) reproduces the reference in fp32."""
        self.matmul_dtype = dtype
        target = dtype or self._like.dtype
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv1d | nn.Embedding):
                module.to(target)
        return self

    def use_precision(self, precision: Precision) -> Flow:
        """Pick the arithmetic once, after loading (spec f.6: the reference runs fp32).

        "fp32" reproduces the reference within the parity tolerances. "bf16" runs the matrix
        products in bf16 (fast on CPUs with AMX and on GPUs; slower than fp32 without AMX).
        "int8" swaps the DiT blocks' linear and conv layers for dynamically quantised int8
        ones (CPU with AVX512-VNNI: about 1.5x faster flow, ~0.6 % mel error); irreversible.
        """
        if precision == "bf16":
            return self.use_matmul_dtype(torch.bfloat16)
        if precision == "int8":
            if self._like.device.type != "cpu":
                raise ValueError("int8 precision is a CPU mode; use fp32 or bf16 on a GPU")
            quantize_dit_(self.decoder.estimator)
            return self
        if precision != "fp32":
            raise ValueError(f"unknown token2wav precision {precision!r}; "
                             f"choose one of {', '.join(PRECISIONS)}")
        return self

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        if self.matmul_dtype is None:
            yield
            return
        with torch.autocast(self.rand_device_type, dtype=self.matmul_dtype):
            yield

    @property
    def rand_device_type(self) -> str:
        return self.decoder.rand_noise.device.type

    @property
    def lookahead(self) -> int:
        return self.encoder.lookahead

    @property
    def up_rate(self) -> int:
        return self.encoder.up_rate

    @property
    def _like(self) -> torch.Tensor:
        """A tensor with the flow's working device and dtype (fp32 in reduced-precision mode)."""
        return self.decoder.rand_noise

    def _codes(self, codes: Sequence[int] | torch.Tensor) -> torch.Tensor:
        codes = torch.as_tensor(codes, dtype=torch.long, device=self._like.device).reshape(1, -1)
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.dims.vocab_size):
            raise ValueError(f"audio codes must be in 0..{self.dims.vocab_size - 1}")
        return codes

    def speaker(self, xvector: torch.Tensor) -> torch.Tensor:
        """x-vector [192] -> projected speaker embedding [1, 80]."""
        xvector = torch.as_tensor(xvector, device=self._like.device).to(self._like.dtype)
        return self.spk_embed_affine_layer(F.normalize(xvector.reshape(1, -1), dim=1))

    def _prompt_mel(self, prompt_mel: torch.Tensor, prompt_tokens: int) -> torch.Tensor:
        mel = torch.as_tensor(prompt_mel, device=self._like.device).to(self._like.dtype)
        if mel.ndim != 2 or mel.shape != (prompt_tokens * self.up_rate, self.dims.output_size):
            raise ValueError(f"prompt mel must be [{prompt_tokens * self.up_rate}, "
                             f"{self.dims.output_size}], got {list(mel.shape)}")
        return mel.T.unsqueeze(0)

    def inference(self, prompt_codes: Sequence[int] | torch.Tensor, prompt_mel: torch.Tensor,
                  xvector: torch.Tensor, codes: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Offline: mel [80, up_rate * len(codes)] for `codes` in the voice of the prompt.

        prompt_mel: [up_rate * len(prompt_codes), 80]; xvector: [192].
        """
        with torch.inference_mode(), self._precision():
            return self._inference(prompt_codes, prompt_mel, xvector, codes)

    def _inference(self, prompt_codes: Sequence[int] | torch.Tensor, prompt_mel: torch.Tensor,
                   xvector: torch.Tensor, codes: Sequence[int] | torch.Tensor) -> torch.Tensor:
        prompt, gen = self._codes(prompt_codes), self._codes(codes)
        if gen.shape[1] == 0:
            raise ValueError("no codes to synthesise")
        mel_prompt = self._prompt_mel(prompt_mel, prompt.shape[1])
        spk = self.speaker(xvector)
        h = self.encoder(self.input_embedding(torch.cat([prompt, gen], dim=1)))
        mu = self.encoder_proj(h).transpose(1, 2)
        cond = torch.zeros_like(mu)
        cond[:, :, : mel_prompt.shape[2]] = mel_prompt
        mel = self.decoder(mu, spk, cond)
        return mel[0, :, mel_prompt.shape[2]:]

    def prepare_voice(self, prompt_codes: Sequence[int] | torch.Tensor, prompt_mel: torch.Tensor,
                      xvector: torch.Tensor) -> VoicePrompt:
        """The streaming caches of a voice's prompt (spec f.5 set-up), computed once per voice.

        As the reference does, the look-ahead of the prompt is its own first codes.
        """
        with torch.inference_mode(), self._precision():
            return self._prepare_voice(prompt_codes, prompt_mel, xvector)

    def _prepare_voice(self, prompt_codes: Sequence[int] | torch.Tensor,
                       prompt_mel: torch.Tensor, xvector: torch.Tensor) -> VoicePrompt:
        prompt = self._codes(prompt_codes)
        n = prompt.shape[1]
        if n < self.lookahead:
            raise ValueError(f"a prompt needs at least {self.lookahead} codes")
        mel_prompt = self._prompt_mel(prompt_mel, n)
        spk = self.speaker(xvector)
        tokens = torch.cat([prompt, prompt[:, : self.lookahead]], dim=1)
        empty = self.encoder.empty_cache(1, self._like)
        h, conformer = self.encoder.step(self.input_embedding(tokens), empty, last=False)
        mu = self.encoder_proj(h).transpose(1, 2)
        empty_steps = [self.decoder.estimator.empty_step_cache(self._like)] * N_TIMESTEPS
        _, steps = self.decoder.forward_chunk(mu, spk, mel_prompt, [0], [empty_steps])
        return VoicePrompt(spk=spk, conformer=conformer, steps=tuple(steps[0]),
                           prompt_tokens=n, prompt_frames=n * self.up_rate)

    def stream_step(self, streams: Sequence[FlowStream], codes: Sequence[Sequence[int]],
                    last: Sequence[bool]) -> list[torch.Tensor]:
        """Advance several streams by one chunk each; returns mel [80, T_i] per stream.

        A chunk is its new codes plus `lookahead` look-ahead codes, unless `last` (spec f.5).
        Streams whose chunks give the same number of frames share one DiT batch; the encoder
        runs per stream (its caches differ in length). Caches are trimmed as the reference does.
        """
        with torch.inference_mode(), self._precision():
            return self._stream_step(streams, codes, last)

    def _stream_step(self, streams: Sequence[FlowStream], codes: Sequence[Sequence[int]],
                     last: Sequence[bool]) -> list[torch.Tensor]:
        mus: list[torch.Tensor] = []
        for stream, chunk, is_last in zip(streams, codes, last, strict=True):
            if stream.finished:
                raise RuntimeError("this flow stream has already had its last chunk")
            tokens = self._codes(chunk)
            if tokens.shape[1] <= (0 if is_last else self.lookahead):
                raise ValueError("a chunk needs at least one code beyond its look-ahead")
            h, stream.conformer = self.encoder.step(self.input_embedding(tokens),
                                                    stream.conformer, last=is_last)
            mus.append(self.encoder_proj(h).transpose(1, 2))
        out: list[torch.Tensor | None] = [None] * len(streams)
        by_len: dict[int, list[int]] = {}
        for i, mu in enumerate(mus):
            by_len.setdefault(mu.shape[2], []).append(i)
        for idx in by_len.values():
            group = [streams[i] for i in idx]
            mu = torch.cat([mus[i] for i in idx], dim=0)
            spk = torch.cat([s.voice.spk for s in group], dim=0)
            mel, caches = self.decoder.forward_chunk(
                mu, spk, torch.zeros_like(mu), [s.dit_frames for s in group],
                [s.steps for s in group])
            for j, (i, stream) in enumerate(zip(idx, group, strict=True)):
                out[i] = mel[j]
                self._keep(stream, caches[j], last[i])
        return [m for m in out if m is not None]

    def _keep(self, stream: FlowStream, steps: list[DitStepCache], last: bool) -> None:
        # Reference trimming (spec f.5a.1): first P frames of the newest-first sequence + last 100.
        head = stream.voice.prompt_frames
        if steps[0].length > head + DIT_KEEP_TAIL:
            steps = [step.trimmed(head, DIT_KEEP_TAIL) for step in steps]
        stream.steps = steps
        # The reference never trims its encoder cache (it fails past 5000 positions); we keep
        # the prompt and the newest tokens so long answers run in bounded memory.
        if stream.conformer.tokens > CONFORMER_MAX_TOKENS:
            p = stream.voice.prompt_tokens
            stream.conformer = stream.conformer.trimmed(p, CONFORMER_MAX_TOKENS - p)
        stream.chunks += 1
        stream.finished = last


def randomize_(flow: Flow, seed: int) -> Flow:
    """Fill every parameter with seeded random values of a sensible scale (test checkpoints).

    Unlike the reference's initialisation, the DiT modulation and final layers are not zero, so
    a parity test sees the whole DiT.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in flow.named_parameters():
            if name.endswith("norm.weight") or ".norm_" in name and name.endswith("weight") \
                    or name.endswith(("out.1.weight", "after_norm.weight", "block.3.weight")):
                value = 1.0 + 0.1 * torch.randn(param.shape, generator=generator)
            elif param.ndim >= 2:
                fan_in = math.prod(param.shape[1:])
                scale = 1.0 if name == "input_embedding.weight" else 1.0 / math.sqrt(fan_in)
                value = scale * (2 * torch.rand(param.shape, generator=generator) - 1) * (
                    1.0 if scale == 1.0 else math.sqrt(3.0))
            else:
                value = 0.05 * torch.randn(param.shape, generator=generator)
            param.copy_(value.to(param.dtype))
    return flow


def load_flow(yaml_path: str | Path, weights_path: str | Path, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32, noise_seed: int = 0) -> Flow:
    """Build the flow from flow.yaml and load flow.pt with strict names (no renaming)."""
    dims = load_flow_yaml(yaml_path)
    weights_path = Path(weights_path)
    sys.stderr.write(f"loading flow weights from {weights_path}\n")
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError as exc:
        raise FlowLoadError(f"{weights_path} does not exist") from exc
    except Exception as exc:  # torch raises several types for corrupt files
        raise FlowLoadError(f"{weights_path} is not a readable torch checkpoint: {exc}") from exc
    if not isinstance(state, dict):
        raise FlowLoadError(f"{weights_path} does not hold a state dict")
    with torch.device("meta"):
        flow = Flow(dims, noise_seed=noise_seed)
    expected = {k: tuple(v.shape) for k, v in flow.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise FlowLoadError(f"{weights_path} does not match flow.yaml: missing {missing[:5]} "
                            f"({len(missing)}), unexpected {extra[:5]} ({len(extra)})")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise FlowLoadError(f"{weights_path}: {name} has shape {list(state[name].shape)}, "
                                f"flow.yaml implies {list(shape)}")
    flow = flow.to_empty(device="cpu")
    flow.load_state_dict(state, strict=True)
    flow.decoder.rand_noise = CausalCFM.make_noise(dims.output_size, noise_seed)
    return flow.to(device=device, dtype=dtype).eval()
