"""make-checkpoint and verify_checkpoint: layout, determinism, sampling mix, each broken case."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from engine.checkpoint import INDEX_FILE
from engine.config import TEST_CHECKPOINT_KEY, is_test_checkpoint, load_config
from engine.loading import CheckpointError, verify_checkpoint
from engine.manifest import llm_manifest
from engine.tokens import SpecialTokens
from tests.helpers import write_tiny_checkpoint

SHARDS = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
LLM_FILES = ["config.json", INDEX_FILE, *SHARDS]


def load_weights(directory: Path) -> dict[str, torch.Tensor]:
    index = json.loads((directory / INDEX_FILE).read_text())
    out = {}
    for name, file_name in index["weight_map"].items():
        with safe_open(directory / file_name, "pt") as f:
            out[name] = f.get_tensor(name)
    return out


def test_tiny_checkpoint_layout(tiny_checkpoint: Path) -> None:
    config = load_config(tiny_checkpoint)
    assert is_test_checkpoint(tiny_checkpoint)
    marker = json.loads((tiny_checkpoint / "config.json").read_text())[TEST_CHECKPOINT_KEY]
    assert marker == {"random_weights": True, "size": "tiny", "seed": 0}
    text, dims = config.text_config, config.audio_dims
    assert text.vocab_size == 158720
    assert text.hidden_size // text.num_attention_heads >= 32
    assert dims.n_audio_state // dims.n_audio_head >= 32
    assert dims.llm_dim == text.hidden_size and dims.n_mels == 128 and dims.n_audio_ctx == 1500
    for name in [*LLM_FILES, "tokenizer.json", "tokenizer_config.json", "token2wav/flow.yaml",
                 "token2wav/flow.pt", "token2wav/hift.pt", "token2wav/campplus.onnx",
                 "token2wav/speech_tokenizer_v2_25hz.onnx"]:
        assert (tiny_checkpoint / name).is_file(), name
    total_bytes = sum(p.stat().st_size for p in tiny_checkpoint.rglob("*") if p.is_file())
    assert total_bytes < 50 * 2**20
    verify_checkpoint(tiny_checkpoint)

    index = json.loads((tiny_checkpoint / INDEX_FILE).read_text())
    manifest = llm_manifest(config)
    assert set(index["weight_map"].values()) == set(SHARDS)
    assert index["metadata"]["total_size"] == sum(math.prod(s) * 2 for s in manifest.values())
    weights = load_weights(tiny_checkpoint)
    assert {n: list(t.shape) for n, t in weights.items()} == manifest
    assert all(t.dtype == torch.bfloat16 for t in weights.values())
    assert all(torch.isfinite(t.float()).all() for t in weights.values())


def test_same_seed_gives_identical_files_other_seed_differs(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    # written over a folder holding shards of another checkpoint: those must not linger
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "model-00004-of-00004.safetensors").write_bytes(b"old")
    again = write_tiny_checkpoint(tmp_path / "again", seed=0)
    def files(root: Path) -> list[Path]:
        return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())

    assert files(tiny_checkpoint) == files(again)
    for rel in files(again):
        assert (tiny_checkpoint / rel).read_bytes() == (again / rel).read_bytes(), rel

    from engine.checkpoint import write_safetensors, _tensor_blocks  # noqa: I001
    name, shape = "model.layers.0.mlp.up_proj.weight", [128, 64]
    other = tmp_path / "other.safetensors"
    write_safetensors(other, {name: shape}, lambda n, s: _tensor_blocks(n, s, 1, 64, None))
    with safe_open(other, "pt") as f:
        assert not torch.equal(f.get_tensor(name), load_weights(tiny_checkpoint)[name])


def test_tiny_model_mostly_speaks_and_ends_its_turns(tiny_checkpoint: Path) -> None:
    """Next-token distribution at temperature 0.7: mostly speech codes, some text, <|EOT|>
    likely enough to end a response within a few hundred tokens (what e2e tests rely on)."""
    from tokenizers import Tokenizer
    from transformers import Qwen2ForCausalLM

    config = load_config(tiny_checkpoint)
    tokenizer = Tokenizer.from_file(str(tiny_checkpoint / "tokenizer.json"))
    special = SpecialTokens.from_vocab(tokenizer.get_vocab(with_added_tokens=True))
    model = Qwen2ForCausalLM(config.text_config).eval()
    weights = load_weights(tiny_checkpoint)
    model.load_state_dict(
        {k: v.float() for k, v in weights.items() if k.startswith(("model.", "lm_head."))}
    )
    prompts = [
        "<|BOT|>system\nYou are a helpful assistant.<|EOT|><|BOT|>human\nHello there!<|EOT|>"
        "<|BOT|>assistant\n<tts_start>",
        "<|BOT|>human\nTell me a story about a cat.<|EOT|><|BOT|>assistant\n<tts_start>"
        "<audio_12><audio_400>Once<audio_5000><audio_77>",
    ]
    text_ids = torch.tensor(sorted(i for t, i in tokenizer.get_vocab(False).items()
                                   if i < special.endoftext))
    for prompt in prompts:
        ids = torch.tensor([tokenizer.encode(prompt).ids])
        with torch.no_grad():
            logits = model(ids).logits[0]
        probs = torch.softmax(logits / 0.7, dim=-1)  # every position: a generated-token context
        speech = probs[:, special.audio_base : special.audio_pad].sum(-1)
        text = probs[:, text_ids].sum(-1)
        eot = probs[:, special.eot]
        assert (speech > 0.6).all() and (speech < 0.95).all(), speech
        assert (text > 0.03).all(), text
        assert (eot > 5e-4).all() and (eot < 0.03).all(), eot


def copy_llm(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ckpt"
    out.mkdir()
    for name in LLM_FILES:
        shutil.copyfile(tiny_checkpoint / name, out / name)
    return out


def rewrite_shard(directory: Path, shard: str, change) -> None:
    tensors = {}
    with safe_open(directory / shard, "pt") as f:
        for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            tensors[name] = f.get_tensor(name)
    change(tensors)
    save_file(tensors, directory / shard, metadata={"format": "pt"})


def edit_index(directory: Path, change) -> None:
    index = json.loads((directory / INDEX_FILE).read_text())
    change(index["weight_map"])
    (directory / INDEX_FILE).write_text(json.dumps(index))


def _drop_config(d: Path) -> None:
    (d / "config.json").unlink()


def _config_without_key(d: Path) -> None:
    values = json.loads((d / "config.json").read_text())
    del values["text_config"]["num_key_value_heads"]
    (d / "config.json").write_text(json.dumps(values))


def _drop_index(d: Path) -> None:
    (d / INDEX_FILE).unlink()


def _drop_shard(d: Path) -> None:
    (d / SHARDS[1]).unlink()


def _index_lacks_tensor(d: Path) -> None:
    edit_index(d, lambda m: m.pop("encoder.blocks.1.attn.query.bias"))


def _index_extra_tensor(d: Path) -> None:
    edit_index(d, lambda m: m.update({"encoder.blocks.9.attn.query.bias": SHARDS[1]}))


def _shard_lacks_tensor(d: Path) -> None:
    rewrite_shard(d, SHARDS[1], lambda t: t.pop("adapter.linear1.bias"))


def _shard_extra_tensor(d: Path) -> None:
    rewrite_shard(d, SHARDS[1], lambda t: t.update({"adapter.extra": torch.zeros(2)}))


def _wrong_shape(d: Path) -> None:
    rewrite_shard(d, SHARDS[1], lambda t: t.update(
        {"adapter.conv.bias": t["adapter.conv.bias"][:32]}))


def _wrong_dtype(d: Path) -> None:
    rewrite_shard(d, SHARDS[1], lambda t: t.update(
        {"encoder.conv2.weight": t["encoder.conv2.weight"].float()}))


def _truncated(d: Path) -> None:
    path = d / SHARDS[2]
    path.write_bytes(path.read_bytes()[:-1000])


def _corrupt_header(d: Path) -> None:
    path = d / SHARDS[0]
    data = bytearray(path.read_bytes())
    data[8:40] = b"\x00garbage-not-json!!!\xff\xfe" + b"x" * 10
    path.write_bytes(bytes(data))


def _header_length_garbage(d: Path) -> None:
    path = d / SHARDS[0]
    data = bytearray(path.read_bytes())
    data[0:8] = (2**40).to_bytes(8, "little")
    path.write_bytes(bytes(data))


BROKEN = [
    (_drop_config, "config.json", "not found"),
    (_config_without_key, "config.json", "text_config.num_key_value_heads"),
    (_drop_index, INDEX_FILE, "not found"),
    (_drop_shard, SHARDS[1], "encoder.conv1.weight"),
    (_index_lacks_tensor, INDEX_FILE, "missing tensor encoder.blocks.1.attn.query.bias"),
    (_index_extra_tensor, INDEX_FILE, "unexpected tensor encoder.blocks.9.attn.query.bias"),
    (_shard_lacks_tensor, SHARDS[1], "missing tensor adapter.linear1.bias"),
    (_shard_extra_tensor, SHARDS[1], "unexpected tensor adapter.extra"),
    (_wrong_shape, SHARDS[1], "adapter.conv.bias has shape [32], expected [64]"),
    (_wrong_dtype, SHARDS[1], "encoder.conv2.weight has dtype F32, expected BF16"),
    (_truncated, SHARDS[2], "truncated: tensor lm_head.weight"),
    (_corrupt_header, SHARDS[0], "corrupt safetensors header"),
    (_header_length_garbage, SHARDS[0], "corrupt safetensors header"),
]


@pytest.mark.parametrize(("break_it", "file_name", "message"), BROKEN,
                         ids=[b[0].__name__.strip("_") for b in BROKEN])
def test_broken_checkpoint_gives_one_clear_error(
    tiny_checkpoint: Path, tmp_path: Path, break_it, file_name: str, message: str
) -> None:
    directory = copy_llm(tiny_checkpoint, tmp_path)
    verify_checkpoint(directory)  # intact before we break it
    break_it(directory)
    with pytest.raises(CheckpointError) as info:
        verify_checkpoint(directory)
    assert str(directory / file_name) in str(info.value)
    assert message in str(info.value)
