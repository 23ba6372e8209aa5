"""Oracle: the reference `utils.log_mel_spectrogram` (padding 479) on .npy waveforms.

Args (JSON): {"pairs": [[input_wav_npy, output_mel_npy], ...]}. Prints {"frames": [T, ...]}.
"""

from __future__ import annotations

import json
import sys

import shim  # the script folder is on sys.path

shim.install()

import numpy as np  # noqa: E402
from utils import log_mel_spectrogram  # noqa: E402  (reference module in .venv-oracle)


def main() -> None:
    args = json.loads(sys.argv[1])
    frames = []
    for wav_path, mel_path in args["pairs"]:
        audio = np.load(wav_path).astype(np.float32)
        mel = log_mel_spectrogram(audio, n_mels=128, padding=479).numpy()
        np.save(mel_path, mel)
        frames.append(int(mel.shape[1]))
    print(json.dumps({"frames": frames}))


if __name__ == "__main__":
    main()
