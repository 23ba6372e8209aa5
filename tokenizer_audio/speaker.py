"""Speaker embedding: Kaldi fbank of the 16 kHz prompt -> campplus.onnx -> 192-d x-vector (f.1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from tokenizer_audio.fbank import speaker_features


def open_onnx(path: Path, what: str, threads: int = 1) -> ort.InferenceSession:
    """A CPU onnxruntime session with `threads` intra-op threads; clear errors for bad files."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for invalid models
        raise ValueError(f"cannot load {what} {path}: {exc}") from exc


class SpeakerEncoder:
    """campplus.onnx through onnxruntime (CPU, one intra-op thread); input name from the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._session = open_onnx(self.path, "speaker model (campplus.onnx)")
        self._input = self._session.get_inputs()[0].name

    def embed(self, wav16k: np.ndarray) -> np.ndarray:
        """16 kHz mono float samples in [-1, 1] -> x-vector float32 [192]."""
        feats = speaker_features(wav16k).numpy()
        if feats.shape[0] == 0:
            raise ValueError("audio too short for a speaker embedding (needs >= 25 ms)")
        out = self._session.run(None, {self._input: feats[None].astype(np.float32)})[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)
