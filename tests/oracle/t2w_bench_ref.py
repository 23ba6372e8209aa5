"""Oracle benchmark: the reference Token2wav streaming (flow + HiFT) on given weights, timed.

Run in .venv-oracle by bench/token2wav.py. Args (JSON): dir (token2wav folder), inputs (torch
file: prompt_codes, prompt_mel, xvector, codes), streams, threads. Several streams are served
the only way the reference allows: one object, each stream's caches (copied) swapped in per
call; a single stream keeps the object's caches, with no copies.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

os.environ["TORCHDYNAMO_DISABLE"] = "1"  # see flow_oracle.py

import ref_token2wav  # noqa: E402  (installs the shim and the CPU patches)
import torch  # noqa: E402


def _own(flow_cache: dict, hift_cache: dict) -> tuple[dict, dict]:
    """Copies of a stream's caches: the reference returns views of buffers shared by all
    streams, so serving several streams from one object needs its own copies (timed too)."""
    return ({k: v.clone() for k, v in flow_cache.items()},
            {k: v.clone() for k, v in hift_cache.items()})


def main() -> None:
    args = json.loads(sys.argv[1])
    torch.set_num_threads(int(args.get("threads", 2)))
    inputs = torch.load(args["inputs"], weights_only=True)
    t2w = ref_token2wav.load(args["dir"], inputs)

    n = int(args["streams"])
    caches, setup_s = [], []
    for _ in range(n):
        start = time.perf_counter()
        t2w.set_stream_cache(ref_token2wav.VOICE)
        setup_s.append(time.perf_counter() - start)
        # One stream needs no swapping: it keeps the object's own caches, copied never.
        caches.append(_own(t2w.stream_cache, t2w.hift_cache_dict) if n > 1
                      else (t2w.stream_cache, t2w.hift_cache_dict))
    codes = list(inputs["codes"])
    buffers = [codes[:] for _ in range(n)]
    chunk_s, round_s, audio_s = [], [], 0.0
    while len(buffers[0]) >= 28:
        round_start = time.perf_counter()
        for s in range(n):
            t2w.stream_cache, t2w.hift_cache_dict = caches[s]
            start = time.perf_counter()
            pcm = t2w.stream(buffers[s][:28], ref_token2wav.VOICE, last_chunk=False)
            chunk_s.append(time.perf_counter() - start)
            audio_s += len(pcm) / 2 / 24000
            caches[s] = (_own(t2w.stream_cache, t2w.hift_cache_dict) if n > 1
                         else (t2w.stream_cache, t2w.hift_cache_dict))
            buffers[s] = buffers[s][25:]
        round_s.append(time.perf_counter() - round_start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"setup_s": setup_s, "chunk_s": chunk_s, "round_s": round_s,
                      "audio_s": audio_s, "peak_mb": peak}))


if __name__ == "__main__":
    main()
