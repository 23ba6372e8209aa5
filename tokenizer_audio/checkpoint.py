"""Random token2wav/ folders in the released layout: flow.yaml, flow.pt, hift.pt, two ONNX files."""

from __future__ import annotations

import math
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from tokenizer_audio.hift import HiFT, HiftDims

if TYPE_CHECKING:
    from tokenizer_audio.flow_config import FlowDims

Size = Literal["tiny", "full"]

TOKEN2WAV_FILES = (
    "flow.yaml", "flow.pt", "hift.pt", "campplus.onnx", "speech_tokenizer_v2_25hz.onnx",
)
TINY_HIFT_DIMS = HiftDims(base_channels=64, f0_channels=64)
XVECTOR_DIM = 192
_ONNX_OPSET = 17
_ONNX_IR_VERSION = 8  # readable by every onnxruntime >= 1.10


def _progress(message: str) -> None:
    sys.stderr.write(f"[token2wav checkpoint] {message}\n")
    sys.stderr.flush()


def random_hift(dims: HiftDims, seed: int) -> HiFT:
    """A HiFT with random weights whose F0 spans voiced and unvoiced frames (not folded)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HiFT(dims)
        with torch.no_grad():
            # Untrained F0 heads sit near 0 Hz (all unvoiced); spread |F0| over ~0..250 Hz so
            # both the harmonic and the noise branch of the source are exercised.
            model.f0_predictor.classifier.weight.mul_(1500.0)
            model.f0_predictor.classifier.bias.fill_(60.0)
            for name, param in model.named_parameters():
                if name.endswith("alpha"):
                    param.uniform_(0.5, 1.5)
    return model.eval()


def _flow_state(dims: FlowDims, seed: int) -> dict[str, torch.Tensor]:
    """flow.pt tensors: our Flow built from `dims`, randomised with nothing zeroed (f.5a)."""
    from tokenizer_audio.flow import Flow, randomize_

    flow = randomize_(Flow(dims), seed)
    return {name: t.contiguous() for name, t in flow.state_dict().items()}


def _init(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    value = rng.uniform(-1, 1, size=shape) * math.sqrt(3.0 / fan_in)
    return numpy_helper.from_array(value.astype(np.float32), name)


def _save_onnx(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", _ONNX_OPSET)], producer_name="stepaudio2-rt"
    )
    model.ir_version = _ONNX_IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_campplus(path: Path, *, width: int, seed: int) -> None:
    """A small speaker model: fbank [1, frames, 80] -> x-vector [1, 192] (mean + std pooling)."""
    rng = np.random.default_rng(seed)
    inits = [
        _init(rng, "w1", (80, width)), numpy_helper.from_array(np.zeros(width, np.float32), "b1"),
        _init(rng, "w2", (2 * width, XVECTOR_DIM)),
        numpy_helper.from_array(rng.normal(0, 0.1, XVECTOR_DIM).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("ReduceMean", ["h"], ["mean"], axes=[1], keepdims=0),
        helper.make_node("Mul", ["h", "h"], ["h2"]),
        helper.make_node("ReduceMean", ["h2"], ["mean2"], axes=[1], keepdims=0),
        helper.make_node("Mul", ["mean", "mean"], ["mean_sq"]),
        helper.make_node("Sub", ["mean2", "mean_sq"], ["var"]),
        helper.make_node("Relu", ["var"], ["var_pos"]),
        helper.make_node("Sqrt", ["var_pos"], ["std"]),
        helper.make_node("Concat", ["mean", "std"], ["pooled"], axis=1),
        helper.make_node("MatMul", ["pooled", "w2"], ["o0"]),
        helper.make_node("Add", ["o0", "b2"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "campplus_random",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "frames", 80])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", XVECTOR_DIM])],
        inits,
    )
    _save_onnx(graph, path)


def write_speech_tokenizer(path: Path, *, width: int, seed: int) -> None:
    """A small S3-tokenizer-shaped model: feats [1, 128, T] + feats_length [1] -> codes [1, T/4].

    feats_length belongs to the real signature; this stand-in (one unpadded utterance) ignores it.
    Two stride-2 convolutions (4x down, 100 Hz -> 25 Hz) and an FSQ head: 8 dims rounded to
    {-1, 0, 1}, read as base-3 digits -> codes 0..6560, the real file's signature and code range.
    """
    rng = np.random.default_rng(seed)
    powers = (3.0 ** np.arange(8)).astype(np.float32).reshape(8, 1)
    inits = [
        _init(rng, "c1", (width, 128, 3)),
        numpy_helper.from_array(np.zeros(width, np.float32), "cb1"),
        _init(rng, "c2", (8, width, 3)),
        numpy_helper.from_array(rng.normal(0, 0.3, 8).astype(np.float32), "cb2"),
        numpy_helper.from_array(np.float32(2.0).reshape(()), "gain"),
        numpy_helper.from_array(np.float32(1.0).reshape(()), "one"),
        numpy_helper.from_array(powers, "powers"),
        numpy_helper.from_array(np.array([-1], np.int64), "last_axis"),
    ]
    conv = {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}
    nodes = [
        helper.make_node("Conv", ["feats", "c1", "cb1"], ["x1"], **conv),
        helper.make_node("Tanh", ["x1"], ["a1"]),
        helper.make_node("Conv", ["a1", "c2", "cb2"], ["x2"], **conv),
        helper.make_node("Mul", ["x2", "gain"], ["x3"]),
        helper.make_node("Tanh", ["x3"], ["z"]),
        helper.make_node("Round", ["z"], ["zr"]),
        helper.make_node("Add", ["zr", "one"], ["digits"]),  # [1, 8, T/4] in {0, 1, 2}
        helper.make_node("Transpose", ["digits"], ["digits_t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["digits_t", "powers"], ["code_f"]),
        helper.make_node("Squeeze", ["code_f", "last_axis"], ["code_sq"]),
        helper.make_node("Cast", ["code_sq"], ["indices"], to=TensorProto.INT32),
    ]
    graph = helper.make_graph(
        nodes, "speech_tokenizer_v2_random",
        [
            helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, 128, "T"]),
            helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1]),
        ],
        [helper.make_tensor_value_info("indices", TensorProto.INT32, [1, "T_codes"])],
        inits,
    )
    _save_onnx(graph, path)


def write_hift(path: Path, *, size: Size, seed: int) -> None:
    """hift.pt: random weights, modern weight-norm spelling without the `generator.` prefix."""
    dims = TINY_HIFT_DIMS if size == "tiny" else HiftDims()
    torch.save(random_hift(dims, seed).state_dict(), path)


def write_token2wav(out_dir: str | Path, *, size: Size, seed: int = 0) -> Path:
    """Write a random token2wav/ folder (all five files, released formats); deterministic per seed.

    tiny: small widths everywhere (well under 30 MB); full: the released flow.yaml and full-size
    flow and HiFT (about 700 MB), with small ONNX stand-ins of the right signatures.
    """
    from tokenizer_audio.flow_config import TINY_FLOW_DIMS, dump_flow_yaml, load_flow_yaml

    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', not {size!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if size == "tiny":
        (out / "flow.yaml").write_text(dump_flow_yaml(TINY_FLOW_DIMS), encoding="utf-8")
    else:
        with resources.as_file(resources.files("tokenizer_audio") / "data" / "flow.yaml") as src:
            shutil.copyfile(src, out / "flow.yaml")
    dims = load_flow_yaml(out / "flow.yaml")
    _progress(f"writing {size} flow.pt to {out}")
    torch.save(_flow_state(dims, seed), out / "flow.pt")
    _progress("writing hift.pt")
    write_hift(out / "hift.pt", size=size, seed=seed + 1)
    _progress("writing campplus.onnx and speech_tokenizer_v2_25hz.onnx")
    width = 32 if size == "tiny" else 512
    write_campplus(out / "campplus.onnx", width=width, seed=seed + 2)
    write_speech_tokenizer(out / "speech_tokenizer_v2_25hz.onnx", width=width, seed=seed + 3)
    _progress("done")
    return out
