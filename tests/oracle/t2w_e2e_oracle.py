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

import flow_oracle  # noqa: F401  (installs the shim and the CPU patches)
import numpy as np
import torch

torch.randn_like = torch.zeros_like  # only HiFT's NSF noise draws use it


def main() -> None:
    args = json.loads(sys.argv[1])
    torch.set_num_threads(2)
    from flashcosyvoice.modules.hifigan import ConvRNNF0Predictor, HiFTGenerator
    from hyperpyyaml import load_hyperpyyaml
    from token2wav import Token2wav

    folder = args["dir"]
    inputs = torch.load(args["inputs"], weights_only=True)
    t2w = Token2wav.__new__(Token2wav)
    t2w.float16 = False
    with open(f"{folder}/flow.yaml") as f:
        t2w.flow = load_hyperpyyaml(f)["flow"]
    t2w.flow.load_state_dict(torch.load(f"{folder}/flow.pt", map_location="cpu",
                                        weights_only=True), strict=True)
    t2w.flow.eval()
    flow_oracle._fit_cache_buffers(t2w.flow)
    t2w.flow.decoder.rand_noise = inputs["noise"].float()
    widths = args.get("hift_widths", {})  # the tiny checkpoint's HiFT is narrower
    t2w.hift = HiFTGenerator(
        base_channels=widths.get("base_channels", 512),
        f0_predictor=ConvRNNF0Predictor(cond_channels=widths.get("f0_channels", 512)))
    state = torch.load(f"{folder}/hift.pt", map_location="cpu", weights_only=True)
    t2w.hift.load_state_dict({k.replace("generator.", ""): v for k, v in state.items()},
                             strict=True)
    t2w.hift.eval()
    t2w.mel_cache_len = 8
    t2w.source_cache_len = 8 * 480
    t2w.speech_window = torch.hamming_window(2 * 8 * 480, periodic=False, dtype=torch.float64)
    prompt = torch.tensor([inputs["prompt_codes"]], dtype=torch.int32)
    prompt_mel = inputs["prompt_mel"].float().unsqueeze(0)
    xvector = inputs["xvector"].float().reshape(1, -1)
    t2w.cache = {"voice": (prompt, torch.tensor([prompt.shape[1]]), xvector, prompt_mel,
                           torch.tensor([prompt_mel.shape[1]]))}
    codes = list(inputs["codes"])

    with torch.inference_mode():
        tokens = torch.tensor([codes], dtype=torch.int32)
        mel = t2w.flow.inference(tokens, torch.tensor([tokens.shape[1]]), prompt,
                                 torch.tensor([prompt.shape[1]]), prompt_mel,
                                 torch.tensor([prompt_mel.shape[1]]), xvector, 10)
        offline, _ = t2w.hift(speech_feat=mel)

        t2w.set_stream_cache("voice")
        buffer, pcm = codes[:], []
        while len(buffer) >= 28:
            pcm.append(np.frombuffer(t2w.stream(buffer[:28], "voice", last_chunk=False), "<i2"))
            buffer = buffer[25:]
        pcm.append(np.frombuffer(t2w.stream(buffer, "voice", last_chunk=True), "<i2"))
    torch.save({"offline": offline[0].float(),
                "stream": torch.from_numpy(np.concatenate(pcm).astype(np.int16))}, args["out"])
    print(json.dumps({"ok": True}))


if __name__ == "__main__":
    main()
