"""Writes random Step-Audio 2 checkpoints in the released layout (tiny for tests, or full size)."""

from __future__ import annotations

import json
import math
import struct
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch

from engine.config import TEST_CHECKPOINT_KEY, config_from_dict

Size = Literal["tiny", "full"]

INDEX_FILE = "model.safetensors.index.json"
FULL_MAX_SHARD_BYTES = 5_000_000_000  # HF's default 5 GB (10^9-based) rule, as released (b.1)
TINY_MAX_SHARD_BYTES = 20_500_000  # cuts the tiny checkpoint into 3 shards
BYTES_PER_ELEMENT = 2  # bf16
_ROWS_PER_BLOCK = 4096  # generation block for big matrices (bounded memory at full size)

TINY_TEXT_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,  # head size 32: vLLM's CPU attention needs >= 32
    "num_attention_groups": 1,
    "num_key_value_heads": 1,
}
TINY_AUDIO_CONFIG = {
    "n_audio_state": 64,
    "n_audio_head": 2,
    "n_audio_layer": 2,
    "llm_dim": 64,
}

# Sampling mix the tiny/full random LLM is shaped for (see the module docstring).
SHAPING_TEMPERATURE = 0.7
SPEECH_SHARE = 0.8
EOT_PER_STEP = 0.003  # measured with top-p and the repetition penalty: ~0.007
_NEUTRAL_SPECIALS = ("<tts_pad>", "<tts_end>", "<audio_6561>")


def _progress(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def full_config_dict() -> dict[str, Any]:
    """The released config.json content (package data)."""
    data = resources.files("engine") / "data" / "step-audio2-mini-config.json"
    return json.loads(data.read_text(encoding="utf-8"))


def tiny_config_dict() -> dict[str, Any]:
    """The released config with small widths; vocabulary, mel bins and context unchanged."""
    values = full_config_dict()
    values["text_config"] = values["text_config"] | TINY_TEXT_CONFIG
    values["audio_encoder_config"] = values["audio_encoder_config"] | TINY_AUDIO_CONFIG
    return values


def config_dict(size: Size, seed: int) -> dict[str, Any]:
    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', not {size!r}")
    values = tiny_config_dict() if size == "tiny" else full_config_dict()
    values[TEST_CHECKPOINT_KEY] = {"random_weights": True, "size": size, "seed": seed}
    return values


def shard_plan(
    manifest: dict[str, list[int]], max_shard_bytes: int
) -> list[list[str]]:
    """Tensor names per shard, by HF's rule: fill shards in order up to `max_shard_bytes`; a
    tensor bigger than that gets a shard of its own."""
    shards: list[list[str]] = []
    current: list[str] = []
    current_bytes = 0
    for name, shape in manifest.items():
        size = math.prod(shape) * BYTES_PER_ELEMENT
        if size > max_shard_bytes:
            shards.append([name])
            continue
        if current_bytes + size > max_shard_bytes:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(name)
        current_bytes += size
    if current:
        shards.append(current)
    return shards


def shard_file_name(index: int, count: int) -> str:
    return f"model-{index + 1:05d}-of-{count:05d}.safetensors"


@dataclass(frozen=True)
class OutputShaping:
    """How the random LLM is shaped so that sampling from it exercises the speech pipeline.

    With the official sampling settings (temperature 0.7, top-p 0.9, repetition penalty 1.05):
    * channel 0 of the residual stream is a constant: every token embedding holds
      `K = 2 sqrt(H)` there and no layer writes to it (row 0 of every `o_proj` and `down_proj`
      is zero), so after the final RMSNorm it is a near-constant h0 ~ 0.68 sqrt(H) at every
      generated position;
    * column 0 of `lm_head` therefore acts as a per-token bias: speech codes `<audio_0..6560>`
      get ~80% of the probability mass, text tokens (and `<tts_pad>`, `<tts_end>`,
      `<audio_6561>`) the rest, `<|EOT|>` ~0.7% per step, so a response ends on its own after
      tens to a few hundred tokens; every other row (control tokens, rows with no token) is
      pushed far down. Ids come from the tokenizer written beside the weights, by string;
    * the other lm_head columns are small random values, so the sampled sequence still
      depends on the context (the model is a function of its input, as parity tests need).
    Measured on the tiny checkpoint (16 seeded samples): all ended with `<|EOT|>` after 8-575
    tokens (median ~115), 69-89% speech codes, 0-28% text.
    """

    speech_ids: range
    neutral_ids: tuple[int, ...]  # text tokens and the output-stream pads
    eot_id: int
    speech_bias: float
    eot_bias: float
    blocked_bias: float = -12.0

    @classmethod
    def from_tokenizer_dir(cls, directory: Path) -> OutputShaping:
        from engine.tokens import N_SPEECH_CODES, SpecialTokens

        vocab: dict[str, int] = json.loads((directory / "vocab.json").read_text("utf-8"))
        added = json.loads((directory / "added_tokens.json").read_text("utf-8"))
        special = SpecialTokens.from_vocab(vocab | added)
        text = sorted(set(vocab.values()) - set(added.values()))
        pads = (vocab[t] for t in _NEUTRAL_SPECIALS if t in vocab)  # names not all certain
        neutral = tuple(text) + tuple(sorted(pads))
        n_speech = N_SPEECH_CODES
        # softmax(bias / T): speech share s = n_speech e^(a/T) / (n_speech e^(a/T) + n_neutral)
        ratio = SPEECH_SHARE / (1 - SPEECH_SHARE) * len(neutral) / n_speech
        speech_bias = SHAPING_TEMPERATURE * math.log(ratio)
        rest = n_speech * math.exp(speech_bias / SHAPING_TEMPERATURE) + len(neutral)
        eot_bias = SHAPING_TEMPERATURE * math.log(EOT_PER_STEP / (1 - EOT_PER_STEP) * rest)
        return cls(
            speech_ids=range(special.audio_base, special.audio_base + n_speech),
            neutral_ids=neutral, eot_id=special.eot, speech_bias=speech_bias, eot_bias=eot_bias,
        )


def _generator(seed: int, name: str) -> torch.Generator:
    # The CPU generator keeps only 32 bits of its seed: mix seed and name into 32 bits.
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}/{name}".encode()))


def _tensor_blocks(
    name: str, shape: list[int], seed: int, hidden: int, shaping: OutputShaping | None
) -> Iterator[torch.Tensor]:
    """The random bf16 tensor `name`, in blocks of rows (dim 0), deterministic per (seed, name)."""
    gen = _generator(seed, name)
    if len(shape) == 1:
        noise = torch.randn(shape, generator=gen)
        if name.endswith("bias"):
            yield (0.05 * noise).bfloat16()
        else:  # LayerNorm / RMSNorm gains
            yield (1.0 + 0.05 * noise).bfloat16()
        return
    fan_in = math.prod(shape[1:])
    if name.endswith("positional_embedding.weight"):
        std = 0.5
    elif name.endswith("embed_tokens.weight"):
        std = 1.0
    elif name == "lm_head.weight":
        std = 0.1
    else:
        std = 1.0 / math.sqrt(fan_in)
    bias_column = _lm_head_bias(shape[0], hidden, shaping) if name == "lm_head.weight" else None
    for start in range(0, shape[0], _ROWS_PER_BLOCK):
        rows = min(_ROWS_PER_BLOCK, shape[0] - start)
        block = std * torch.randn([rows, *shape[1:]], generator=gen)
        if name.endswith("embed_tokens.weight"):
            block[:, 0] = 2.0 * math.sqrt(hidden)  # the constant residual channel
        elif name.endswith(("o_proj.weight", "down_proj.weight")) and start == 0:
            block[0] = 0.0  # no layer writes to channel 0
        elif bias_column is not None:
            block[:, 0] = bias_column[start : start + rows]
        yield block.bfloat16()


def _lm_head_bias(vocab: int, hidden: int, shaping: OutputShaping | None) -> torch.Tensor:
    h0 = 0.68 * math.sqrt(hidden)  # channel 0 after the final RMSNorm (measured: 0.63-0.75)
    if shaping is None:
        return torch.zeros(vocab)
    logits = torch.full((vocab,), shaping.blocked_bias)
    logits[torch.tensor(shaping.neutral_ids)] = 0.0
    logits[shaping.speech_ids.start : shaping.speech_ids.stop] = shaping.speech_bias
    logits[shaping.eot_id] = shaping.eot_bias
    return logits / h0


def safetensors_header(manifest: dict[str, list[int]]) -> tuple[bytes, list[str]]:
    """Header bytes (length prefix, JSON, space padding) of a bf16 safetensors file, and the
    order of the tensors' data.

    Laid out as the `safetensors` library does (data sorted by name, `__metadata__` format pt),
    which reproduces the released shard sizes to the byte.
    """
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    order = sorted(manifest)
    for name in order:
        size = math.prod(manifest[name]) * BYTES_PER_ELEMENT
        header[name] = {
            "dtype": "BF16", "shape": manifest[name], "data_offsets": [offset, offset + size]
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw, order


def write_safetensors(
    path: Path, manifest: dict[str, list[int]], blocks: Any, *, label: str = ""
) -> int:
    """Stream bf16 tensors to a safetensors file; returns the data bytes.

    `blocks(name, shape)` yields the tensor's bf16 row blocks.
    """
    header, order = safetensors_header(manifest)
    total = sum(math.prod(shape) * BYTES_PER_ELEMENT for shape in manifest.values())
    done = 0
    next_report = 0.0
    with path.open("wb") as f:
        f.write(header)
        for i, name in enumerate(order):
            shape = manifest[name]
            written = 0
            for block in blocks(name, shape):
                data = block.contiguous().view(torch.int16).numpy().tobytes()
                f.write(data)
                written += len(data)
            if written != math.prod(shape) * BYTES_PER_ELEMENT:
                raise RuntimeError(f"{path.name}: wrote {written} bytes for {name}")
            done += written
            if label and (done >= next_report or i == len(manifest) - 1):
                _progress(f"  {label}: tensor {i + 1}/{len(manifest)} {name}, "
                          f"{done / 1e9:.2f}/{total / 1e9:.2f} GB")
                next_report = done + 0.1 * total  # about ten lines per shard
    return total


def write_checkpoint(out_dir: str | Path, *, size: Size, seed: int = 0) -> Path:
    """Write a random checkpoint of `size` into `out_dir` (created); returns the directory.

    Layout: config.json (with a `stepaudio2_test_checkpoint` marker), tokenizer files, bf16
    safetensors shards `model-0000N-of-0000M.safetensors` + `model.safetensors.index.json`, and
    `token2wav/`. Weights are drawn tensor by tensor from a generator seeded by (seed, name) and
    streamed to disk: the same seed gives byte-identical files, and the full size never holds
    more than one block of rows in memory. The LLM is shaped as `OutputShaping` says.

    tiny: 42 MB of LLM weights (vocabulary 158,720, decoder width 64, encoder width 64) in 3
    shards; full: the released shapes (16.6 GB) in the released 4 shards. Not for quality: the
    weights are random (config.json says so).
    """
    from engine.manifest import llm_manifest
    from engine.tokenizer_build import write_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    values = config_dict(size, seed)
    config = config_from_dict(values)
    _progress(f"writing {size} random Step-Audio 2 checkpoint (seed {seed}) to {out}")
    (out / "config.json").write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    write_tokenizer(out)
    shaping = OutputShaping.from_tokenizer_dir(out)
    manifest = llm_manifest(config)
    max_bytes = TINY_MAX_SHARD_BYTES if size == "tiny" else FULL_MAX_SHARD_BYTES
    plan = shard_plan(manifest, max_bytes)
    hidden = config.text_config.hidden_size

    def blocks(name: str, shape: list[int]) -> Iterator[torch.Tensor]:
        return _tensor_blocks(name, shape, seed, hidden, shaping)

    for stale in out.glob("model-?????-of-?????.safetensors"):
        stale.unlink()  # shards of an earlier checkpoint in this folder (as save_pretrained does)
    weight_map: dict[str, str] = {}
    total = 0
    for i, names in enumerate(plan):
        file_name = shard_file_name(i, len(plan))
        label = f"shard {i + 1}/{len(plan)}"
        _progress(f"writing {file_name} ({len(names)} tensors)")
        total += write_safetensors(
            out / file_name, {n: manifest[n] for n in names}, blocks, label=label
        )
        weight_map |= dict.fromkeys(names, file_name)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", "utf-8")
    _write_token2wav(out / "token2wav", size=size, seed=seed)
    _progress("checkpoint written")
    return out


def _write_token2wav(out_dir: Path, *, size: Size, seed: int) -> None:
    try:
        from tokenizer_audio.checkpoint import write_token2wav
    except ModuleNotFoundError as exc:
        if exc.name is None or not "tokenizer_audio.checkpoint".startswith(exc.name):
            raise
        _progress("warning: tokenizer_audio.checkpoint is not available; token2wav/ not written")
        return
    write_token2wav(out_dir, size=size, seed=seed)
