"""Oracle: the reference's prompt features of a waveform: 24 kHz 80-bin mel and 128-bin log-mel.

Args (JSON): wav24_npy and wav16_npy (float32 [N]), out_npz. Writes mel80 (flashcosyvoice
mel_spectrogram, [80, T]) and mel128 (s3tokenizer.log_mel_spectrogram, no padding, [128, T]).
"""

from __future__ import annotations

import json
import sys

from shim import install

install()

import numpy as np  # noqa: E402
import s3tokenizer  # noqa: E402
import torch  # noqa: E402
from flashcosyvoice.utils.audio import mel_spectrogram  # noqa: E402


def main() -> None:
    args = json.loads(sys.argv[1])
    wav24 = torch.from_numpy(np.load(args["wav24_npy"]))
    wav16 = torch.from_numpy(np.load(args["wav16_npy"]))
    mel80 = mel_spectrogram(wav24[None])[0].numpy()
    mel128 = s3tokenizer.log_mel_spectrogram(wav16).numpy()
    np.savez(args["out_npz"], mel80=mel80, mel128=mel128)
    print(json.dumps({"mel80": list(mel80.shape), "mel128": list(mel128.shape)}))


if __name__ == "__main__":
    main()
