"""token2wav/flow.yaml read as data into frozen dims dataclasses (spec f.2), never executed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

# Class paths the shipped flow.yaml names under `!new:`; we check them, never import them.
FLOW_CLASS = "cosyvoice2.flow.flow.CausalMaskedDiffWithXvec"
ENCODER_CLASS = "cosyvoice2.transformer.upsample_encoder_v2.UpsampleConformerEncoderV2"
DECODER_CLASS = "cosyvoice2.flow.flow_matching.CausalConditionalCFM"
ESTIMATOR_CLASS = "cosyvoice2.flow.decoder_dit.DiT"


class FlowConfigError(ValueError):
    """flow.yaml does not describe a flow model this package can build."""


@dataclass(frozen=True)
class ConformerDims:
    """UpsampleConformerEncoderV2 sizes (spec f.3 step 3)."""

    input_size: int = 512
    output_size: int = 512
    pre_lookahead_len: int = 3
    num_blocks: int = 6
    num_up_blocks: int = 4
    up_stride: int = 2
    up_scale_factor: float = 2.0
    attention_heads: int = 8
    linear_units: int = 2048
    key_bias: bool = True


@dataclass(frozen=True)
class DitDims:
    """DiT estimator sizes (spec f.3, DiT)."""

    in_channels: int = 320
    out_channels: int = 80
    mlp_ratio: float = 4.0
    depth: int = 16
    num_heads: int = 8
    head_dim: int = 64
    hidden_size: int = 512


@dataclass(frozen=True)
class FlowDims:
    """The whole flow model: embedding, speaker affine, encoder, projection, CFM + DiT."""

    input_size: int = 512
    output_size: int = 80  # mel bins
    spk_embed_dim: int = 192
    vocab_size: int = 6561
    encoder: ConformerDims = ConformerDims()
    dit: DitDims = DitDims()
    inference_cfg_rate: float = 0.7

    def validate(self) -> FlowDims:
        """Check the sizes fit together; raise FlowConfigError naming the mismatch."""
        enc, dit = self.encoder, self.dit
        checks = [
            (enc.input_size == self.input_size, "flow.encoder.input_size != flow.input_size"),
            (enc.input_size == enc.output_size,
             "flow.encoder.input_size != output_size (up_embed maps output to output)"),
            (enc.output_size % enc.attention_heads == 0,
             "flow.encoder.output_size is not a multiple of attention_heads"),
            (dit.out_channels == self.output_size,
             "flow.decoder.estimator.out_channels != flow.output_size"),
            (dit.in_channels == 4 * self.output_size,
             "flow.decoder.estimator.in_channels != 4 * flow.output_size (x, mu, spk, cond)"),
            (enc.up_stride == int(enc.up_scale_factor),
             "flow.encoder.up_stride != up_scale_factor"),
            (self.inference_cfg_rate > 0, "flow.decoder.inference_cfg_rate must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise FlowConfigError(message)
        return self


FULL_FLOW_DIMS = FlowDims()

# A small flow for tests: same structure, small widths (mel stays 80 bins for HiFT).
TINY_FLOW_DIMS = FlowDims(
    input_size=64,
    encoder=ConformerDims(
        input_size=64, output_size=64, num_blocks=2, num_up_blocks=2, attention_heads=2,
        linear_units=128,
    ),
    dit=DitDims(depth=2, num_heads=2, head_dim=32, hidden_size=64),
)

# Keys whose value is fixed: the only variant this package implements.
_ENCODER_FIXED = {
    "input_layer": "linear",
    "pos_enc_layer_type": "rel_pos_espnet",
    "selfattention_layer_type": "rel_selfattn",
    "normalize_before": True,
}
_FLOW_FIXED = {"output_type": "mel"}
# Dropouts are training-only; any value in [0, 1) is accepted and ignored at inference.
_DROPOUTS = ("dropout_rate", "positional_dropout_rate", "attention_dropout_rate")


@dataclass(frozen=True)
class _New:
    """A `!new:<class>` node: the class path and its keyword mapping."""

    cls: str
    kwargs: dict[str, Any]


class _FlowYamlLoader(yaml.SafeLoader):
    """SafeLoader that turns `!new:<class>` into `_New` and refuses every other custom tag."""


def _construct_new(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> _New:
    if not isinstance(node, yaml.MappingNode):
        raise FlowConfigError(f"!new:{suffix} must hold a mapping of constructor arguments")
    return _New(cls=suffix, kwargs=loader.construct_mapping(node, deep=True))


def _refuse_tag(_loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    raise FlowConfigError(f"unsupported YAML tag {node.tag!r} (only !new: is understood)")


_FlowYamlLoader.add_multi_constructor("!new:", _construct_new)
_FlowYamlLoader.add_multi_constructor("!", _refuse_tag)
_FlowYamlLoader.add_multi_constructor("tag:", _refuse_tag)


def _expect_new(node: Any, cls: str, path: str) -> dict[str, Any]:
    if not isinstance(node, _New):
        raise FlowConfigError(f"{path} must be !new:{cls}")
    if node.cls != cls:
        raise FlowConfigError(f"{path} is !new:{node.cls}, expected !new:{cls}")
    return dict(node.kwargs)


def _take(kwargs: dict[str, Any], key: str, kind: type, path: str, default: Any) -> Any:
    if key not in kwargs:
        return default
    value = kwargs.pop(key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise FlowConfigError(f"{path}.{key} = {value!r} is not a {kind.__name__}")
    if kind in (int, float) and value <= 0:
        raise FlowConfigError(f"{path}.{key} = {value!r} must be > 0")
    return value


def _take_fixed(kwargs: dict[str, Any], fixed: dict[str, Any], path: str) -> None:
    for key, expected in fixed.items():
        if key in kwargs and kwargs.pop(key) != expected:
            raise FlowConfigError(f"{path}.{key} must be {expected!r} (the only supported value)")


def _take_dropouts(kwargs: dict[str, Any], path: str) -> None:
    for key in _DROPOUTS:
        if key in kwargs:
            value = kwargs.pop(key)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1:
                raise FlowConfigError(f"{path}.{key} = {value!r} is not a rate in [0, 1)")


def _no_leftovers(kwargs: dict[str, Any], path: str) -> None:
    if kwargs:
        raise FlowConfigError(f"unknown key {path}.{sorted(kwargs)[0]}")


def _dims_from(kwargs: dict[str, Any], cls: type, path: str) -> Any:
    defaults = cls()
    values = {
        name: _take(kwargs, name, type(getattr(defaults, name)), path, getattr(defaults, name))
        for name in cls.__dataclass_fields__
        if not isinstance(getattr(defaults, name), ConformerDims | DitDims)
    }
    return values


def parse_flow_yaml(text: str) -> FlowDims:
    """FlowDims from flow.yaml text; FlowConfigError names any unknown key or bad value."""
    try:
        doc = yaml.load(text, Loader=_FlowYamlLoader)  # noqa: S506 - our loader only builds data
    except yaml.YAMLError as exc:
        raise FlowConfigError(f"flow.yaml is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) != {"flow"}:
        keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise FlowConfigError(f"flow.yaml must have the single top-level key 'flow', got {keys}")
    flow = _expect_new(doc["flow"], FLOW_CLASS, "flow")
    encoder = _expect_new(flow.pop("encoder", None), ENCODER_CLASS, "flow.encoder")
    decoder = _expect_new(flow.pop("decoder", None), DECODER_CLASS, "flow.decoder")
    estimator = _expect_new(decoder.pop("estimator", None), ESTIMATOR_CLASS,
                            "flow.decoder.estimator")

    _take_fixed(encoder, _ENCODER_FIXED, "flow.encoder")
    _take_dropouts(encoder, "flow.encoder")
    if "activation_type" in encoder and encoder.pop("activation_type") != "swish":
        raise FlowConfigError("flow.encoder.activation_type must be 'swish'")
    enc = ConformerDims(**_dims_from(encoder, ConformerDims, "flow.encoder"))
    _no_leftovers(encoder, "flow.encoder")

    dit = DitDims(**_dims_from(estimator, DitDims, "flow.decoder.estimator"))
    _no_leftovers(estimator, "flow.decoder.estimator")

    cfg = _take(decoder, "inference_cfg_rate", float, "flow.decoder", 0.7)
    _no_leftovers(decoder, "flow.decoder")

    _take_fixed(flow, _FLOW_FIXED, "flow")
    top = _dims_from(flow, FlowDims, "flow")
    top.pop("inference_cfg_rate")
    _no_leftovers(flow, "flow")
    return FlowDims(**top, encoder=enc, dit=dit, inference_cfg_rate=cfg).validate()


def load_flow_yaml(path: str | Path) -> FlowDims:
    """FlowDims from a token2wav/flow.yaml file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowConfigError(f"cannot read {path}: {exc}") from exc
    try:
        return parse_flow_yaml(text)
    except FlowConfigError as exc:
        raise FlowConfigError(f"{path}: {exc}") from exc


def dump_flow_yaml(dims: FlowDims) -> str:
    """flow.yaml text in the shipped layout (4-space indent, same key order) for these dims."""
    enc, dit = asdict(dims.encoder), asdict(dims.dit)

    def fmt(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return f"'{value}'"
        return str(value)

    lines = [
        f"flow: !new:{FLOW_CLASS}",
        f"    input_size: {dims.input_size}",
        f"    output_size: {dims.output_size}",
        f"    spk_embed_dim: {dims.spk_embed_dim}",
        "    output_type: 'mel'",
        f"    vocab_size: {dims.vocab_size}",
        f"    encoder: !new:{ENCODER_CLASS}",
        f"        input_size: {enc['input_size']}",
        f"        output_size: {enc['output_size']}",
        "        input_layer: 'linear'",
        f"        pre_lookahead_len: {enc['pre_lookahead_len']}",
        f"        num_blocks: {enc['num_blocks']}",
        f"        num_up_blocks: {enc['num_up_blocks']}",
        f"        up_stride: {enc['up_stride']}",
        f"        up_scale_factor: {int(enc['up_scale_factor'])}",
        f"        attention_heads: {enc['attention_heads']}",
        "        pos_enc_layer_type: 'rel_pos_espnet'",
        "        selfattention_layer_type: 'rel_selfattn'",
        f"        key_bias: {fmt(enc['key_bias'])}",
        f"        linear_units: {enc['linear_units']}",
        "        dropout_rate: 0.1",
        "        positional_dropout_rate: 0.1",
        "        attention_dropout_rate: 0.1",
        "        normalize_before: true",
        f"    decoder: !new:{DECODER_CLASS}",
        f"        inference_cfg_rate: {dims.inference_cfg_rate}",
        f"        estimator: !new:{ESTIMATOR_CLASS}",
    ]
    lines += [f"            {key}: {fmt(value)}" for key, value in dit.items()]
    return "\n".join(lines) + "\n"
