"""Benchmark: streaming token2wav, ours against the reference, on full-size random weights.

Usage: .venv/bin/python bench/token2wav.py [--dir DIR] [--chunks 5] [--threads 2]
Measures, for 1 and 4 concurrent streams: voice set-up, time to first audio (first 28 codes ->
first PCM), time per 25-code chunk (1 s of audio), real-time factor, throughput and peak memory.
Each configuration runs in its own process (peak RSS is per process). Prints a table and writes
bench/results/token2wav.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPT_CODES = 200  # default: an 8 s prompt, as in the reference measurement of spec f.5a


def _log(message: str) -> None:
    sys.stderr.write(f"[bench token2wav] {message}\n")
    sys.stderr.flush()


def _inputs(path: Path, chunks: int, prompt_codes: int) -> None:
    import numpy as np
    import torch

    rs = np.random.RandomState(0)
    torch.save({
        "prompt_codes": rs.randint(0, 6561, prompt_codes).tolist(),
        "prompt_mel": torch.from_numpy((rs.randn(2 * prompt_codes, 80) - 5).astype(np.float32)),
        "xvector": torch.from_numpy(rs.randn(192).astype(np.float32)),
        "codes": rs.randint(0, 6561, 25 * chunks + 3).tolist(),
    }, path)


def _ours(folder: Path, inputs_path: Path, streams: int, threads: int, precision: str,
          wav_out: Path) -> dict:
    """Child process: our worker serving `streams` concurrent streams of one voice."""
    import numpy as np
    import torch

    from tokenizer_audio.token2wav import Token2wav
    from tokenizer_audio.worker import Token2wavWorker

    torch.set_num_threads(threads)
    inputs = torch.load(inputs_path, weights_only=True)

    class Voice:
        content_hash = "bench"
        prompt_codes = np.asarray(inputs["prompt_codes"], dtype=np.int64)
        prompt_mel = inputs["prompt_mel"].numpy()
        xvector = inputs["xvector"].numpy()

    codes = list(inputs["codes"])

    async def run() -> dict:
        worker = Token2wavWorker(None, threads=threads)  # all torch work on its thread
        worker.start()
        t2w = await worker.load(
            lambda: Token2wav(folder, precision=precision, load_voices=False))
        start = time.perf_counter()
        await worker.call(lambda: t2w.voice_prompt(Voice()))
        setup = time.perf_counter() - start
        opened = [await worker.open_stream(Voice()) for _ in range(streams)]
        chunk_s, round_s, audio, first_stream = [], [], 0.0, []
        first_audio = None
        begin = time.perf_counter()
        for i in range(0, len(codes) - 3, 25):
            piece = codes[i:i + 28] if i == 0 else codes[i + 3:i + 28]
            t0 = time.perf_counter()

            async def feed(stream, piece=piece):  # noqa: ANN001, ANN202
                t = time.perf_counter()
                wav = await stream.feed(piece)
                return wav, time.perf_counter() - t

            results = await asyncio.gather(*[feed(s) for s in opened])
            _log(f"ours: {len(opened)} stream(s), chunk in {time.perf_counter() - t0:.2f} s")
            round_s.append(time.perf_counter() - t0)
            first_stream.append(results[0][0])
            for wav, took in results:
                chunk_s.append(took)
                audio += wav.size / 24000
            if first_audio is None:
                first_audio = time.perf_counter() - begin
        for s in opened:
            await s.cancel()
        await worker.close()
        np.save(wav_out, np.concatenate(first_stream))
        return {"chunk_s": chunk_s, "round_s": round_s, "audio_s": audio,
                "ttfa_s": first_audio, "batches": worker.batches, "setup_s": [setup]}

    out = asyncio.run(run())
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _reference(folder: Path, inputs_path: Path, streams: int, threads: int) -> dict:
    from tests.helpers import run_oracle

    out = run_oracle("t2w_bench_ref.py", {"dir": str(folder), "inputs": str(inputs_path),
                                          "streams": streams, "threads": threads}, timeout=3600)
    out["ttfa_s"] = out["chunk_s"][0]
    return out


def _run(impl: str, streams: int, args: argparse.Namespace, folder: Path,
         inputs_path: Path) -> dict:
    if impl == "reference":
        return _reference(folder, inputs_path, streams, args.threads)
    proc = subprocess.run(
        [sys.executable, __file__, "--dir", str(args.dir), "--threads", str(args.threads),
         "--child", f"{impl}:{streams}"],
        capture_output=True, text=True, cwd=REPO, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"{impl} with {streams} streams failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _wav_path(folder: Path, impl: str, streams: int) -> Path:
    return folder / f"wav-{impl}-{streams}.npy"


def _errors(folder: Path, impl: str, streams: int) -> dict:
    """A reduced-precision run's first stream against fp32's (same codes, same source noise):
    waveform relative L2 (phase drift counts fully) and STFT magnitude relative L2."""
    import numpy as np
    import torch

    if impl in ("ours", "reference") or not _wav_path(folder, "ours", streams).exists():
        return {"wav_rel_l2_vs_fp32": None, "spec_rel_l2_vs_fp32": None}
    exact = torch.from_numpy(np.load(_wav_path(folder, "ours", streams)))
    approx = torch.from_numpy(np.load(_wav_path(folder, impl, streams)))
    window = torch.hann_window(1024)

    def spec(x: torch.Tensor) -> torch.Tensor:
        return torch.stft(x, 1024, 256, window=window, return_complex=True).abs()

    return {"wav_rel_l2_vs_fp32": round(float((approx - exact).norm() / exact.norm()), 4),
            "spec_rel_l2_vs_fp32": round(float((spec(approx) - spec(exact)).norm()
                                               / spec(exact).norm()), 4)}


def _mel_error(folder: Path, inputs_path: Path, precision: str, chunks: int = 3) -> float:
    """Relative L2 of the streamed flow mel in `precision` against fp32 (the flow's own error,
    before the vocoder)."""
    import torch

    from tokenizer_audio.flow import FlowStream, load_flow

    inputs = torch.load(inputs_path, weights_only=True)
    codes = list(inputs["codes"])
    mels = []
    for p in ("fp32", precision):
        flow = load_flow(folder / "flow.yaml", folder / "flow.pt").use_precision(p)
        stream = FlowStream.start(flow.prepare_voice(inputs["prompt_codes"],
                                                     inputs["prompt_mel"], inputs["xvector"]))
        mels.append(torch.cat([flow.stream_step([stream], [codes[i:i + 28]], [False])[0]
                               for i in range(0, 25 * chunks, 25)], dim=1))
    return round(float((mels[1] - mels[0]).norm() / mels[0].norm()), 5)


def _summary(name: str, streams: int, runs: list[dict]) -> dict:
    chunks = [t for raw in runs for t in raw["chunk_s"]]
    rounds = [t for raw in runs for t in raw["round_s"]]
    throughput = sum(raw["audio_s"] for raw in runs) / sum(rounds)  # audio s per wall s
    return {
        "impl": name, "streams": streams, "runs": len(runs),
        "voice_setup_s": round(statistics.median([t for raw in runs for t in raw["setup_s"]]), 3),
        "ttfa_s": round(statistics.median([raw["ttfa_s"] for raw in runs]), 3),
        "chunk_s_median": round(statistics.median(chunks), 3),
        "round_s_median": round(statistics.median(rounds), 3),
        "rtf": round(statistics.median(rounds) / 1.0, 3),  # wall s per 1 s of audio per stream
        "throughput_x_realtime": round(throughput, 3),
        "peak_mb": round(max(raw["peak_mb"] for raw in runs)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench-token2wav-full"))
    parser.add_argument("--chunks", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--prompt-codes", type=int, default=PROMPT_CODES)
    parser.add_argument("--impl", nargs="+", default=["ours", "ours-int8", "reference"],
                        help="ours (fp32), ours-int8, ours-bf16, reference")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every configuration this many times, interleaved")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.dir / "token2wav"
    inputs_path = args.dir / "inputs.pt"
    if args.child:
        impl, streams = args.child.split(":")
        precision = impl.removeprefix("ours-") if impl != "ours" else "fp32"
        print(json.dumps(_ours(folder, inputs_path, int(streams), args.threads, precision,
                               _wav_path(args.dir, impl, int(streams)))))
        return

    if not (folder / "flow.pt").exists():
        from tokenizer_audio.checkpoint import write_token2wav

        _log(f"writing full-size random weights to {folder}")
        write_token2wav(folder, size="full", seed=0)
    _inputs(inputs_path, args.chunks, args.prompt_codes)
    raw_all: dict[str, list[dict]] = {}
    # Configurations interleave within each repeat, so a slow minute on this shared machine hits
    # every implementation alike; medians are taken over all repeats.
    for rep in range(args.repeat):
        for streams in args.streams:
            for impl in args.impl:
                _log(f"repeat {rep + 1}/{args.repeat}: {impl}, {streams} stream(s)")
                raw_all.setdefault(f"{impl}:{streams}", []).append(
                    _run(impl, streams, args, folder, inputs_path))
    mel_errors = {}
    for impl in args.impl:
        if impl.startswith("ours-"):
            _log(f"{impl}: flow mel error against fp32")
            mel_errors[impl] = _mel_error(folder, inputs_path, impl.removeprefix("ours-"),
                                          min(3, args.chunks))
    rows = []
    for streams in args.streams:
        for impl in args.impl:
            rows.append(_summary(impl, streams, raw_all[f"{impl}:{streams}"])
                        | {"mel_rel_l2_vs_fp32": mel_errors.get(impl)}
                        | _errors(args.dir, impl, streams))
    header = list(rows[0])
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[k]) for k in header))
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": __import__("os").cpu_count(), "python": platform.python_version(),
                    "load_avg_at_end": __import__("os").getloadavg()},
        "prompt_codes": args.prompt_codes, "chunks": args.chunks, "threads": args.threads,
        "rows": rows, "raw": raw_all, "time": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                              time.gmtime()),
    }
    out = REPO / "bench" / "results" / "token2wav.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    _log(f"wrote {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
