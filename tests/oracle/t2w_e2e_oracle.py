"""Oracle: the reference Token2wav end to end (flow + HiFT), offline and streamed, on given weights.

Run by tests/helpers.run_oracle in .venv-oracle. Args (JSON): dir (token2wav folder), inputs (a
torch file with prompt_codes, prompt_mel [2Np, 80], xvector [192], codes, noise [1, 80, F]), out
(a torch file to write: offline float waveform [N], stream int16 PCM [N]), optional hift_widths
(base_channels, f0_channels). The HiFT source noise
is zeroed (torch.randn_like -> zeros) and the flow noise is the given one, so both are exact.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import ref_token2wav  # installs the shim and the CPU patches
import torch

torch.randn_like = torch.zeros_like  # only HiFT's NSF noise draws use it


def main() -> None:
    args = json.loads(sys.argv[1])
    torch.set_num_threads(2)
    inputs = torch.load(args["inputs"], weights_only=True)
    t2w = ref_token2wav.load(args["dir"], inputs, args.get("hift_widths"))
    t2w.flow.decoder.rand_noise = inputs["noise"].float()
    prompt, prompt_len, xvector, prompt_mel, prompt_mel_len = t2w.cache[ref_token2wav.VOICE]
    codes = list(inputs["codes"])

    with torch.inference_mode():
        tokens = torch.tensor([codes], dtype=torch.int32)
        mel = t2w.flow.inference(tokens, torch.tensor([tokens.shape[1]]), prompt, prompt_len,
                                 prompt_mel, prompt_mel_len, xvector, 10)
        offline, _ = t2w.hift(speech_feat=mel)

        t2w.set_stream_cache(ref_token2wav.VOICE)

        def stream(piece: list[int], last: bool) -> np.ndarray:
            return np.frombuffer(t2w.stream(piece, ref_token2wav.VOICE, last_chunk=last), "<i2")

        buffer, pcm = codes[:], []
        while len(buffer) >= 28:
            pcm.append(stream(buffer[:28], False))
            buffer = buffer[25:]
        pcm.append(stream(buffer, True))
    torch.save({"offline": offline[0].float(),
                "stream": torch.from_numpy(np.concatenate(pcm).astype(np.int16))}, args["out"])
    print(json.dumps({"ok": True}))


if __name__ == "__main__":
    main()
