"""Checks an LLM checkpoint directory before any weight is used (safetensors headers only)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from engine.checkpoint import INDEX_FILE
from engine.config import ConfigError, load_config

_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
EXPECTED_DTYPE = "BF16"  # every released tensor is bf16 (spec b.1)
_DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I8": 1, "U8": 1, "I16": 2, "I32": 4,
                "I64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


class CheckpointError(RuntimeError):
    """The checkpoint directory cannot be used; the message names the file and the tensor."""


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked against the file's size."""
    try:
        file_size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file ({file_size} bytes)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(_MAX_HEADER_BYTES, file_size - 8):
                raise CheckpointError(
                    f"{path}: corrupt safetensors header (claims {header_len} bytes, "
                    f"file has {file_size})"
                )
            raw = f.read(header_len)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc})") from exc
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    data_size = file_size - 8 - header_len
    for name, info in header.items():
        try:
            begin, end = info["data_offsets"]
            nbytes = math.prod(info["shape"]) * _DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: corrupt header entry for tensor {name}") from exc
        if end - begin != nbytes or begin < 0:
            raise CheckpointError(f"{path}: corrupt data offsets for tensor {name}")
        if end > data_size:
            raise CheckpointError(
                f"{path}: truncated: tensor {name} ends at byte {end} of the data section, "
                f"which has {data_size} bytes"
            )
    return header


def _read_index(model_dir: Path) -> dict[str, str]:
    path = model_dir / INDEX_FILE
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors index ({exc})") from exc
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{path}: 'weight_map' is not an object")
    return weight_map


def verify_checkpoint(model_dir: str | Path) -> None:
    """Raise CheckpointError unless `model_dir` holds a complete, intact LLM checkpoint.

    Checks: config.json loads; the index exists; every tensor of the model (per the config) is
    listed in it, none extra; every shard exists and its header is intact and fits the file;
    each tensor sits in the shard the index names, with the expected shape and dtype BF16.
    Reads only headers, so it takes milliseconds even for the full 16.6 GB.
    """
    from engine.manifest import llm_manifest

    directory = Path(model_dir)
    try:
        config = load_config(directory)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    expected = llm_manifest(config)
    weight_map = _read_index(directory)
    index_path = directory / INDEX_FILE
    missing = [name for name in expected if name not in weight_map]
    if missing:
        raise CheckpointError(
            f"{index_path}: missing tensor {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    extra = [name for name in weight_map if name not in expected]
    if extra:
        raise CheckpointError(f"{index_path}: unexpected tensor {extra[0]}")
    headers: dict[str, dict[str, Any]] = {}
    for file_name in sorted(set(weight_map.values())):
        shard = directory / file_name
        if Path(file_name).name != file_name:
            raise CheckpointError(f"{index_path}: shard name {file_name!r} is not a file name")
        if not shard.is_file():
            tensor = next(n for n in expected if weight_map[n] == file_name)
            raise CheckpointError(f"{shard}: shard file not found (holds tensor {tensor})")
        headers[file_name] = read_safetensors_header(shard)
    for name, shape in expected.items():
        shard = directory / weight_map[name]
        info = headers[weight_map[name]].get(name)
        if info is None:
            raise CheckpointError(f"{shard}: missing tensor {name} (the index places it here)")
        if list(info["shape"]) != shape:
            raise CheckpointError(
                f"{shard}: tensor {name} has shape {info['shape']}, expected {shape}"
            )
        if info["dtype"] != EXPECTED_DTYPE:
            raise CheckpointError(
                f"{shard}: tensor {name} has dtype {info['dtype']}, expected {EXPECTED_DTYPE}"
            )
    for file_name, header in headers.items():
        for name in header:
            if weight_map.get(name) != file_name:
                raise CheckpointError(
                    f"{directory / file_name}: unexpected tensor {name} (not indexed here)"
                )
