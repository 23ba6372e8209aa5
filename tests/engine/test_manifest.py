"""Tensor manifests: our modules give exactly the released names, shapes, order and shards."""

from __future__ import annotations

import json
import math

from engine.checkpoint import (
    FULL_MAX_SHARD_BYTES,
    full_config_dict,
    safetensors_header,
    shard_file_name,
    shard_plan,
    tiny_config_dict,
)
from engine.config import config_from_dict, load_config
from engine.manifest import llm_manifest
from server.cli import main
from tests.helpers import DATA

RELEASED_TENSORS = DATA / "step-audio2-mini-tensors.json"


def test_manifest_command_prints_the_released_tensor_list(capsys) -> None:
    assert main(["manifest", "--config", str(DATA / "step-audio2-mini-config.json")]) == 0
    out = capsys.readouterr().out
    expected = json.loads(RELEASED_TENSORS.read_text())
    printed = json.loads(out)
    assert len(printed) == 832
    assert list(printed.items()) == list(expected.items())
    assert out == RELEASED_TENSORS.read_text()  # same file, byte for byte


def test_manifest_command_reports_a_broken_config(tmp_path, capsys) -> None:
    values = json.loads((DATA / "step-audio2-mini-config.json").read_text())
    del values["audio_encoder_config"]["n_audio_head"]
    (tmp_path / "config.json").write_text(json.dumps(values))
    assert main(["manifest", "--config", str(tmp_path / "config.json")]) == 2
    assert "audio_encoder_config.n_audio_head" in capsys.readouterr().err


def test_full_shard_plan_matches_the_released_weight_map() -> None:
    released = json.loads((DATA / "step-audio2-mini-weight-map.json").read_text())
    manifest = llm_manifest(config_from_dict(full_config_dict()))
    plan = shard_plan(manifest, FULL_MAX_SHARD_BYTES)
    assert [len(names) for names in plan] == [104, 122, 366, 240]
    weight_map = {n: shard_file_name(i, len(plan)) for i, names in enumerate(plan) for n in names}
    assert weight_map == released["weight_map"]
    total = sum(math.prod(shape) * 2 for shape in manifest.values())
    assert total == released["metadata"]["total_size"] == 16_630_358_528
    # our shard files would have the released byte sizes (spec b.1): header layout included
    sizes = []
    for names in plan:
        shard = {n: manifest[n] for n in names}
        header, _ = safetensors_header(shard)
        sizes.append(len(header) + sum(math.prod(s) * 2 for s in shard.values()))
    assert sizes == [4_925_370_984, 4_932_751_008, 4_988_307_424, 1_784_019_520]


def test_packaged_full_config_is_the_released_one() -> None:
    assert full_config_dict() == json.loads((DATA / "step-audio2-mini-config.json").read_text())
    assert load_config(DATA / "step-audio2-mini-config.json").audio_dims.n_audio_layer == 32


def test_tiny_manifest_keeps_names_and_vocabulary() -> None:
    full = llm_manifest(config_from_dict(full_config_dict()))
    tiny = llm_manifest(config_from_dict(tiny_config_dict()))
    assert list(tiny) != list(full)  # fewer layers
    assert set(tiny) <= set(full)
    assert tiny["model.embed_tokens.weight"] == [158720, 64]
    assert tiny["lm_head.weight"] == [158720, 64]
    assert tiny["encoder.conv1.weight"] == [64, 128, 3]
    assert tiny["encoder.positional_embedding.weight"] == [1500, 64]
    assert tiny["adapter.linear2.weight"] == [64, 2048]
    # head size 32 in decoder (q 64 = 2 x 32, kv 32 = 1 x 32) and encoder (64 = 2 x 32)
    assert tiny["model.layers.0.self_attn.k_proj.weight"] == [32, 64]
