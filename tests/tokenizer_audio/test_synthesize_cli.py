"""`stepaudio2-rt synthesize` on a tiny random token2wav: WAV format, length, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from server.cli import main
from tests.helpers import speech
from tokenizer_audio.checkpoint import write_token2wav

N_CODES = 40  # one full streaming chunk (25 + 3 look-ahead) and a short last one; 1.6 s


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    write_token2wav(root / "token2wav", size="tiny", seed=0)
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("inputs")
    codes = np.random.default_rng(0).integers(0, 6561, N_CODES).tolist()
    (out / "codes.json").write_text(json.dumps(codes))
    sf.write(str(out / "prompt.wav"), speech("Speak like me, in this voice, please. Thank you!"),
             16_000)
    return out / "codes.json", out / "prompt.wav"


def _run(*argv: str | Path) -> int:
    return main(["synthesize", *map(str, argv)])


@pytest.mark.parametrize("stream", [False, True], ids=["offline", "stream"])
def test_synthesize_writes_24khz_mono_pcm16(ckpt: Path, inputs: tuple[Path, Path],
                                            tmp_path: Path, stream: bool) -> None:
    codes, prompt = inputs
    out = tmp_path / "out.wav"
    flags = ["--stream"] if stream else []
    assert _run("--model", ckpt, "--codes", codes, "--voice", prompt, "-o", out, *flags) == 0
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.subtype) == (24_000, 1, "PCM_16")
    audio, _ = sf.read(str(out), dtype="int16")
    assert audio.shape == (N_CODES * 960,)  # 25 codes per second
    assert np.abs(audio).max() > 100  # not silence


def test_model_may_be_the_token2wav_dir_and_voice_defaults(ckpt: Path, inputs: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    codes, _ = inputs
    out = tmp_path / "default.wav"
    assert _run("--model", ckpt / "token2wav", "--codes", codes, "-o", out) == 0
    assert sf.info(str(out)).frames == N_CODES * 960


def test_bad_inputs_exit_with_a_message(ckpt: Path, inputs: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    codes, prompt = inputs
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2, 7000]")
    assert _run("--model", ckpt, "--codes", bad, "-o", tmp_path / "x.wav") == 2
    assert "not a code in 0..6560" in capsys.readouterr().err
    short = tmp_path / "short.wav"
    sf.write(str(short), speech("Hi."), 16_000)
    assert _run("--model", ckpt, "--codes", codes, "--voice", short, "-o", tmp_path / "y.wav") == 2
    assert "3-30 s long" in capsys.readouterr().err
    assert _run("--model", tmp_path, "--codes", codes, "-o", tmp_path / "z.wav") == 1
    assert "cannot load token2wav" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists() and not (tmp_path / "y.wav").exists()
