"""Voice registry: prompt WAVs of any rate and layout -> cached codes, mel and x-vector."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from tests.helpers import speech
from tokenizer_audio.checkpoint import write_campplus, write_speech_tokenizer
from tokenizer_audio.types import VoiceError
from tokenizer_audio.voices import VoiceRegistry


def _wav(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


@pytest.fixture(scope="module")
def t2w_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the two prompt-side files of a token2wav folder: all the registry reads."""
    out = tmp_path_factory.mktemp("token2wav")
    write_campplus(out / "campplus.onnx", width=32, seed=0)
    write_speech_tokenizer(out / "speech_tokenizer_v2_25hz.onnx", width=32, seed=1)
    return out


@pytest.fixture(scope="module")
def prompt16() -> np.ndarray:
    wav = speech("This is my voice. Please speak in exactly this timbre from now on.")
    assert 3 < len(wav) / 16_000 < 30
    return wav


def test_default_voice_features(t2w_dir: Path) -> None:
    registry = VoiceRegistry(t2w_dir)
    assert registry.default_name == "default"
    assert registry.names() == ["default"]
    voice = registry.get("default")
    n = voice.prompt_codes.shape[0]
    assert voice.name == "default"
    assert len(voice.content_hash) == 64
    assert voice.prompt_codes.dtype == np.int64 and 150 < n < 210  # 7.8 s at 25 Hz
    assert voice.prompt_codes.min() >= 0 and voice.prompt_codes.max() <= 6560
    assert voice.prompt_mel.shape == (2 * n, 80) and voice.prompt_mel.dtype == np.float32
    assert voice.xvector.shape == (192,) and voice.xvector.dtype == np.float32
    assert registry.get("default") is voice  # computed once
    with pytest.raises(ValueError):
        voice.prompt_mel[0, 0] = 0.0  # shared read-only between streams


def test_any_rate_and_layout_gives_the_same_voice(t2w_dir: Path, prompt16: np.ndarray) -> None:
    registry = VoiceRegistry(t2w_dir)
    base = registry.add("base", _wav(prompt16, 16_000, "FLOAT"))
    # 44.1 kHz: same speech, so the same number of codes and a close x-vector.
    at44 = registry.add("at44", _wav(resample_poly(prompt16, 441, 160), 44_100, "FLOAT"))
    assert abs(at44.prompt_codes.size - base.prompt_codes.size) <= 1
    cos = float(at44.xvector @ base.xvector
                / np.linalg.norm(at44.xvector) / np.linalg.norm(base.xvector))
    assert cos > 0.99
    # Stereo: codes and x-vector from the first channel, mel from the channel mean (f.1).
    stereo = np.stack([prompt16, np.zeros_like(prompt16)], axis=1)
    two = registry.add("stereo", _wav(stereo, 16_000, "FLOAT"))
    np.testing.assert_array_equal(two.prompt_codes, base.prompt_codes)
    np.testing.assert_allclose(two.xvector, base.xvector, atol=1e-5)
    assert not np.allclose(two.prompt_mel, base.prompt_mel)  # half the amplitude
    assert registry.names() == ["default", "at44", "base", "stereo"]


def test_prompt_mel_is_forced_to_two_frames_per_code(t2w_dir: Path,
                                                     prompt16: np.ndarray) -> None:
    registry = VoiceRegistry(t2w_dir)
    for extra in (0, 100, 333, 639):  # lengths whose mel frames and codes round differently
        voice = registry.add(f"len{extra}", _wav(prompt16[: 16_000 * 4 + extra], 16_000))
        assert voice.prompt_mel.shape == (2 * voice.prompt_codes.size, 80)


def test_voices_persist_and_features_are_cached_on_disk(
    t2w_dir: Path, prompt16: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wav = _wav(prompt16, 16_000)
    first = VoiceRegistry(t2w_dir, voices_dir=tmp_path).add("alice", wav)
    assert (tmp_path / "alice.wav").read_bytes() == wav
    assert len(list((tmp_path / ".cache").glob(f"{first.content_hash}-*.npz"))) == 1

    second = VoiceRegistry(t2w_dir, voices_dir=tmp_path)
    assert second.names() == ["default", "alice"]

    def no_compute(*_args: object) -> None:
        raise AssertionError("features were recomputed despite the disk cache")

    monkeypatch.setattr(VoiceRegistry, "_compute", no_compute)
    again = second.get("alice")
    np.testing.assert_array_equal(again.prompt_codes, first.prompt_codes)
    np.testing.assert_array_equal(again.prompt_mel, first.prompt_mel)
    np.testing.assert_array_equal(again.xvector, first.xvector)
    # Same content under another name: same features, no computation either.
    bob = second.add("bob", wav)
    assert bob.content_hash == first.content_hash and bob.name == "bob"


def test_bad_prompts_and_names_are_clear_errors(t2w_dir: Path, prompt16: np.ndarray) -> None:
    registry = VoiceRegistry(t2w_dir)
    cases = {
        "2.0": (_wav(prompt16[:32_000], 16_000), "3-30 s long, got 2.00 s"),
        "31": (_wav(np.tile(prompt16, 12)[: 31 * 16_000], 16_000), "got 31.00 s"),
        "silent": (_wav(np.zeros(5 * 16_000, np.float32), 16_000), "silent"),
        "junk": (b"RIFF not really a wave file" * 10, "not a readable audio file"),
        "empty": (b"", "not a readable audio file"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(VoiceError, match=message):
            registry.add(name, data)
    with pytest.raises(VoiceError, match="unknown voice 'nobody'"):
        registry.get("nobody")
    with pytest.raises(VoiceError, match="voice name"):
        registry.add("../escape", _wav(prompt16, 16_000))
    with pytest.raises(VoiceError, match="reserved"):
        registry.add("default", _wav(prompt16, 16_000))
    assert registry.names() == ["default"]  # nothing half-registered
