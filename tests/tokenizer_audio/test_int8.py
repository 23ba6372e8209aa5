"""The int8 fast mode: quantised products stay close to fp32, the flow's error is bounded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.tokenizer_audio.test_flow import _inputs, _rel, _stream
from tokenizer_audio.dit import conv_as_linear
from tokenizer_audio.flow import Flow, randomize_
from tokenizer_audio.flow_config import TINY_FLOW_DIMS
from tokenizer_audio.int8 import Int8Linear


def test_int8_linear_is_close_to_fp32_and_fusing_changes_nothing() -> None:
    torch.manual_seed(0)
    q, k, v = (nn.Linear(96, 64) for _ in range(3))
    x = torch.randn(2, 7, 96)
    x[0, 3] *= 50  # one loud frame: per-row scales keep the other rows exact enough
    fused = Int8Linear(q, k, v)
    alone = [Int8Linear(m) for m in (q, k, v)]
    with torch.inference_mode():
        out = fused(x)
        assert out.shape == (2, 7, 192)
        for part, (lin, single) in zip(out.chunk(3, dim=-1), zip((q, k, v), alone, strict=True),
                                       strict=True):
            assert torch.equal(part, single(x))  # integer products: fusing is exact
            exact = lin(x)
            assert 0 < _rel(part, exact) < 0.02
            assert _rel(part[1], exact[1]) < 0.02  # the quiet row is not drowned by the loud one


def test_int8_conv_on_windows_matches_conv1d() -> None:
    torch.manual_seed(1)
    conv = nn.Conv1d(48, 32, 3)
    x = torch.randn(2, 20, 48)  # time-major, as in the DiT
    with torch.inference_mode():
        exact = conv(x.transpose(1, 2)).transpose(1, 2)
        assert _rel(conv_as_linear(conv, x), exact) < 1e-6  # the fp32 path is the same conv
        approx = conv_as_linear(Int8Linear(conv), x)
    assert approx.shape == exact.shape == (2, 18, 32)
    assert 0 < _rel(approx, exact) < 0.02


def test_int8_flow_streams_within_a_measured_error_of_fp32() -> None:
    """Measured: ~0.65 % relative L2 of the mel on full-size random weights (bench/),
    0.25 % on the tiny ones; the norms, the attention and the ODE state stay fp32."""
    exact = randomize_(Flow(TINY_FLOW_DIMS), seed=0).eval()
    fast = randomize_(Flow(TINY_FLOW_DIMS), seed=0).eval().use_precision("int8")
    dit = fast.decoder.estimator
    assert all(isinstance(b.attn.to_qkv, Int8Linear) and isinstance(b.mlp.fc1, Int8Linear)
               and isinstance(b.conv.block[1], Int8Linear) for b in dit.blocks)
    inputs = _inputs(8, 50, 1, 3 * 25 + 3, exact)
    for a, b in zip(_stream(fast, inputs), _stream(exact, inputs), strict=True):
        assert a.dtype == torch.float32
        assert 0 < _rel(a, b) < 0.02


def test_unknown_precision_and_int8_off_the_cpu_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="fp32, bf16, int8"):
        randomize_(Flow(TINY_FLOW_DIMS), seed=0).use_precision("fp8")  # type: ignore[arg-type]
    with torch.device("meta"):
        flow = Flow(TINY_FLOW_DIMS)
    with pytest.raises(ValueError, match="CPU mode"):
        flow.use_precision("int8")
