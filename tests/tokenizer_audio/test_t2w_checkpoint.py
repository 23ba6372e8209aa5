"""Random token2wav/ folders: five files in released formats, loadable, deterministic, small."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.helpers import DATA
from tokenizer_audio.checkpoint import TOKEN2WAV_FILES, write_token2wav
from tokenizer_audio.flow import load_flow
from tokenizer_audio.flow_config import load_flow_yaml
from tokenizer_audio.hift import load_hift
from tokenizer_audio.manifest import flow_manifest


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_token2wav(tmp_path_factory.mktemp("t2w") / "token2wav", size="tiny", seed=0)


def test_tiny_folder_has_all_five_files_and_is_small(tiny: Path) -> None:
    assert sorted(p.name for p in tiny.iterdir()) == sorted(TOKEN2WAV_FILES)
    total = sum(p.stat().st_size for p in tiny.iterdir())
    assert total < 30 * 2**20, f"tiny token2wav is {total / 2**20:.1f} MiB"


def test_tiny_files_load_with_the_product_loaders(tiny: Path) -> None:
    dims = load_flow_yaml(tiny / "flow.yaml")
    flow = load_flow(tiny / "flow.yaml", tiny / "flow.pt")
    state = torch.load(tiny / "flow.pt", weights_only=True)
    assert set(state) == set(flow_manifest(tiny / "flow.yaml"))
    loaded = flow.state_dict()
    assert all(torch.equal(loaded[k].float(), v) for k, v in state.items())
    # Nothing zeroed: the DiT modulation and final layers carry weights (f.5a).
    for name, tensor in state.items():
        if tensor.numel() > 1:
            assert float(tensor.abs().max()) > 0, f"{name} is all zeros"
    assert dims.dit.depth >= 1
    hift = load_hift(tiny / "hift.pt")
    assert hift.dims.base_channels < 512  # tiny: fewer channels, same loader
    with torch.inference_mode():
        wav = hift(torch.randn(1, 80, 10) - 5.0)
    assert wav.shape == (1, 4800)

    spk = ort.InferenceSession(str(tiny / "campplus.onnx"), providers=["CPUExecutionProvider"])
    (xvec,) = spk.run(None, {spk.get_inputs()[0].name: np.zeros((1, 120, 80), np.float32)})
    assert xvec.shape == (1, 192)
    tok = ort.InferenceSession(str(tiny / "speech_tokenizer_v2_25hz.onnx"),
                               providers=["CPUExecutionProvider"])
    assert [i.name for i in tok.get_inputs()] == ["feats", "feats_length"]
    feats = np.random.default_rng(0).normal(size=(1, 128, 400)).astype(np.float32)
    (codes,) = tok.run(None, {"feats": feats, "feats_length": np.array([400], np.int32)})
    assert codes.shape == (1, 100) and 0 <= codes.min() and codes.max() <= 6560


def test_same_seed_same_files_other_seed_other_weights(tiny: Path, tmp_path: Path) -> None:
    again = write_token2wav(tmp_path / "again", size="tiny", seed=0)
    other = write_token2wav(tmp_path / "other", size="tiny", seed=1)
    for name in ("flow.yaml", "campplus.onnx", "speech_tokenizer_v2_25hz.onnx"):
        assert (again / name).read_bytes() == (tiny / name).read_bytes(), name
    for name in ("flow.pt", "hift.pt"):
        a, b = (torch.load(d / name, weights_only=True) for d in (tiny, again))
        c = torch.load(other / name, weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a), name
        assert any(not torch.equal(a[k], c[k]) for k in a), name
    assert (other / "campplus.onnx").read_bytes() != (tiny / "campplus.onnx").read_bytes()


def test_full_flow_yaml_is_the_released_file() -> None:
    shipped = resources.files("tokenizer_audio") / "data" / "flow.yaml"
    assert shipped.read_bytes() == (DATA / "step-audio2-mini-flow.yaml").read_bytes()


def test_flow_manifest_equals_released_flow() -> None:
    expected = json.loads((DATA / "step-audio2-flow-tensors.json").read_text())
    manifest = flow_manifest(DATA / "step-audio2-mini-flow.yaml")
    assert len(manifest) == 605
    assert manifest == expected


def test_unknown_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tiny"):
        write_token2wav(tmp_path, size="medium", seed=0)  # type: ignore[arg-type]
