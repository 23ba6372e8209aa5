"""Oracle: the reference flow (PyPI step-audio2) offline and streamed, on given weights and noise.

Run by tests/helpers.run_oracle in .venv-oracle. Args (JSON): yaml, weights, inputs (a torch file
with prompt_codes, prompt_mel [2Np, 80], xvector [192], offline_codes, stream_codes, noise
[1, 80, F]), out (a torch file to write), threads, and `what` (list of "offline", "stream").
The streamed path is the reference's own `Token2wav.stream` (set_stream_cache, the DiT cache
trimming and all), with HiFT replaced by a recorder of the mel it is given.
"""

from __future__ import annotations

import json
import os
import sys
import time

# The reference wraps its encoder step in torch.compile(backend="eager"): tracing only costs
# time here (tens of seconds per new shape), the eager result is the same.
os.environ["TORCHDYNAMO_DISABLE"] = "1"

import shim  # noqa: E402

shim.install()
# The stubs answer every attribute with a function, `__file__` included, which breaks the
# `inspect` calls torch.compile makes on the reference's encoder: give them a plain name.
for _name in [m for m in sys.modules if m.split(".")[0] == "torchaudio"]:
    sys.modules[_name].__file__ = f"<stub {_name}>"

import torch  # noqa: E402


def _cpu_factories() -> None:
    """The reference passes device='cuda' to tensor factories; send those to the CPU."""
    for name in ("zeros", "ones", "empty", "tensor", "arange", "full", "randn"):
        original = getattr(torch, name)

        def patched(*a, __original=original, **k):  # noqa: ANN002, ANN003, ANN202
            if str(k.get("device", "")).startswith("cuda"):
                k["device"] = "cpu"
            return __original(*a, **k)

        setattr(torch, name, patched)


_cpu_factories()


class _MelRecorder(torch.nn.Module):
    """Stands in for HiFT: records each mel it gets and returns silence of the right length."""

    def __init__(self) -> None:
        super().__init__()
        self.mels: list[torch.Tensor] = []

    def forward(self, speech_feat, cache_source=None):  # noqa: ANN001, ANN201
        self.mels.append(speech_feat.clone())
        n = speech_feat.shape[2] * 480
        return torch.zeros(1, n), torch.zeros(1, 1, n)


def _fit_cache_buffers(flow: torch.nn.Module) -> None:
    """The reference sizes its streaming buffers for the released widths; fit them to `flow`."""
    dit = flow.decoder.estimator
    depth, hidden = len(dit.blocks), dit.in_proj.out_features
    heads, head_dim = dit.blocks[0].attn.num_heads, dit.blocks[0].attn.head_dim
    dit.cnn_cache_buffer = torch.zeros(depth, 2, 2 * hidden, 2)
    dit.att_cache_buffer = torch.zeros(depth, 2, heads, 1000, 2 * head_dim)
    flow.decoder.cnn_cache_buffer = torch.zeros(16, depth, 2, 2 * hidden, 2)
    flow.decoder.att_cache_buffer = torch.zeros(16, depth, 2, heads, 1000, 2 * head_dim)


def main() -> None:
    args = json.loads(sys.argv[1])
    torch.set_num_threads(int(args.get("threads", 2)))
    from hyperpyyaml import load_hyperpyyaml
    from token2wav import Token2wav

    with open(args["yaml"]) as f:
        flow = load_hyperpyyaml(f)["flow"]
    flow.load_state_dict(torch.load(args["weights"], map_location="cpu", weights_only=True),
                         strict=True)
    flow.eval()
    _fit_cache_buffers(flow)
    inputs = torch.load(args["inputs"], weights_only=True)
    flow.decoder.rand_noise = inputs["noise"].float()

    prompt = torch.tensor([inputs["prompt_codes"]], dtype=torch.int32)
    prompt_mel = inputs["prompt_mel"].float().unsqueeze(0)
    xvector = inputs["xvector"].float().reshape(1, -1)
    result: dict = {}
    timing: dict = {}
    if "offline" in args["what"]:
        codes = torch.tensor([inputs["offline_codes"]], dtype=torch.int32)
        start = time.perf_counter()
        mel = flow.inference(codes, torch.tensor([codes.shape[1]]), prompt,
                             torch.tensor([prompt.shape[1]]), prompt_mel,
                             torch.tensor([prompt_mel.shape[1]]), xvector, 10)
        timing["offline_s"] = time.perf_counter() - start
        result["offline"] = mel[0]
    if "stream" in args["what"]:
        t2w = Token2wav.__new__(Token2wav)
        t2w.float16 = False
        t2w.flow = flow
        t2w.hift = _MelRecorder()
        t2w.mel_cache_len = 8
        t2w.source_cache_len = 8 * 480
        t2w.speech_window = torch.hamming_window(2 * 8 * 480, periodic=False, dtype=torch.float64)
        key = "prompt"
        t2w.cache = {key: (prompt, torch.tensor([prompt.shape[1]]), xvector, prompt_mel,
                           torch.tensor([prompt_mel.shape[1]]))}
        start = time.perf_counter()
        t2w.set_stream_cache(key)
        timing["setup_s"] = time.perf_counter() - start
        buffer = list(inputs["stream_codes"])
        chunks, chunk_s = [], []
        while len(buffer) >= 28:
            start = time.perf_counter()
            t2w.stream(buffer[:28], key, last_chunk=False)
            chunk_s.append(time.perf_counter() - start)
            buffer = buffer[25:]
        if buffer:
            t2w.stream(buffer, key, last_chunk=True)
        for i, mel in enumerate(t2w.hift.mels):
            chunks.append(mel[0] if i == 0 else mel[0, :, 8:])  # drop the 8 re-vocoded frames
        timing["chunk_s"] = chunk_s
        result["stream"] = chunks
    torch.save(result, args["out"])
    print(json.dumps({"ok": True, "timing": timing}))


if __name__ == "__main__":
    main()
