"""Oracle: the reference HiFTGenerator (offline) and Token2wav.stream's vocoder path on a mel.

Args (JSON): hift_pt, mel_npy ([1, 80, T] float32), out_npy (offline waveform), and optionally
chunks (mel frames per streaming call) with out_stream_npy (int16 PCM, concatenated).
Source noise is zeroed (torch.randn_like -> zeros) so the outputs are deterministic.
"""

from __future__ import annotations

import json
import sys

from shim import install

install()

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.randn_like = torch.zeros_like  # only the NSF noise draws use it in HiFT
_tensor = torch.tensor


def _cpu_tensor(*args, device=None, **kwargs):  # noqa: ARG001 - stream() asks for 'cuda'
    return _tensor(*args, **kwargs)


torch.tensor = _cpu_tensor

import token2wav  # noqa: E402
from flashcosyvoice.modules.hifigan import HiFTGenerator  # noqa: E402


class _FakeFlow:
    """Stands in for the flow: returns the next prepared mel chunk (no flow run)."""

    def __init__(self, chunks: list[torch.Tensor]) -> None:
        self.chunks = chunks

    def inference_chunk(self, token, spk, cache, last_chunk, n_timesteps):  # noqa: ARG002
        return self.chunks.pop(0), cache


def main() -> None:
    args = json.loads(sys.argv[1])
    torch.set_num_threads(2)
    hift = HiFTGenerator()
    state = torch.load(args["hift_pt"], map_location="cpu", weights_only=True)
    hift.load_state_dict({k.replace("generator.", ""): v for k, v in state.items()}, strict=True)
    hift.eval()
    mel = torch.from_numpy(np.load(args["mel_npy"]))
    wav, _ = hift(speech_feat=mel)
    np.save(args["out_npy"], wav.numpy())

    if args.get("chunks"):
        bounds = np.cumsum([0] + args["chunks"])
        chunks = [mel[:, :, a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        t2w = object.__new__(token2wav.Token2wav)  # no model files: only the vocoder path runs
        t2w.float16 = False
        t2w.hift = hift
        t2w.flow = _FakeFlow(list(chunks))
        t2w.mel_cache_len = 8
        t2w.source_cache_len = 8 * 480
        t2w.speech_window = torch.from_numpy(np.hamming(2 * t2w.source_cache_len))
        prompt_mels = torch.zeros(1, 10, 80)
        t2w.cache = {"p": (None, None, None, prompt_mels, None)}
        t2w.stream_cache = {"estimator_att_cache": torch.zeros(1, 1, 1, 1, 0)}
        t2w.hift_cache_dict = {
            "mel": torch.zeros(1, 80, 0), "source": torch.zeros(1, 1, 0),
            "speech": torch.zeros(1, 0),
        }
        pcm = [
            np.frombuffer(t2w.stream([0], "p", last_chunk=i == len(chunks) - 1), dtype="<i2")
            for i in range(len(chunks))
        ]
        np.save(args["out_stream_npy"], np.concatenate(pcm))
    print(json.dumps({"frames": int(mel.shape[2]), "samples": int(wav.shape[1])}))


if __name__ == "__main__":
    main()
