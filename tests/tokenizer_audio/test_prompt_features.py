"""Prompt-side features: 24 kHz mel, 128-bin log-mel, Kaldi fbank, speaker model, S3 codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from scipy.signal import resample_poly

from tests.helpers import run_oracle, speech
from tokenizer_audio.checkpoint import write_campplus, write_speech_tokenizer
from tokenizer_audio.fbank import kaldi_fbank, speaker_features
from tokenizer_audio.mel import mel_spectrogram
from tokenizer_audio.s3tokenizer import SpeechTokenizer, log_mel_128
from tokenizer_audio.speaker import SpeakerEncoder


@pytest.fixture(scope="module")
def wav16() -> np.ndarray:
    return speech("The quick brown fox jumps over the lazy dog.")


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx")
    write_campplus(out / "campplus.onnx", width=32, seed=0)
    write_speech_tokenizer(out / "speech_tokenizer_v2_25hz.onnx", width=32, seed=1)
    return out


@pytest.mark.oracle
def test_mels_match_the_reference(wav16: np.ndarray, tmp_path: Path) -> None:
    wav24 = resample_poly(wav16, 3, 2).astype(np.float32)
    np.save(tmp_path / "w24.npy", wav24)
    np.save(tmp_path / "w16.npy", wav16)
    run_oracle("t2w_prompt_features.py", {
        "wav24_npy": str(tmp_path / "w24.npy"), "wav16_npy": str(tmp_path / "w16.npy"),
        "out_npz": str(tmp_path / "ref.npz"),
    })
    ref = np.load(tmp_path / "ref.npz")
    mel80 = mel_spectrogram(wav24).numpy()
    assert mel80.shape == ref["mel80"].shape == (80, len(wav24) // 480)
    np.testing.assert_allclose(mel80, ref["mel80"], atol=1e-5, rtol=0)
    mel128 = log_mel_128(wav16).numpy()
    assert mel128.shape == ref["mel128"].shape == (128, len(wav16) // 160)
    np.testing.assert_allclose(mel128, ref["mel128"], atol=1e-5, rtol=0)


def test_mel_batches_and_frame_count() -> None:
    rng = np.random.default_rng(0)
    wavs = rng.uniform(-0.5, 0.5, (2, 24_000)).astype(np.float32)
    batch = mel_spectrogram(wavs)
    assert batch.shape == (2, 80, 50)
    np.testing.assert_allclose(batch[1].numpy(), mel_spectrogram(wavs[1]).numpy(), atol=1e-6)
    assert float(mel_spectrogram(np.zeros(4800, np.float32)).max()) == pytest.approx(np.log(1e-5))


def test_fbank_matches_kaldi_native_fbank(wav16: np.ndarray) -> None:
    import kaldi_native_fbank as knf  # dev-only reference (requirements: kaldi-native-fbank)

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.frame_opts.samp_freq = 16_000
    opts.mel_opts.num_bins = 80
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16_000, wav16.tolist())
    fbank.input_finished()
    ref = np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])
    ours = kaldi_fbank(wav16).numpy()
    assert ours.shape == ref.shape == (1 + (len(wav16) - 400) // 160, 80)
    # float32 log energies; the largest gaps sit in near-empty bins. Measured max 3.3e-4.
    np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)
    centred = speaker_features(wav16).numpy()
    np.testing.assert_allclose(centred.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(centred, ours - ours.mean(axis=0), atol=1e-5)


def test_speaker_encoder_gives_a_192d_xvector(onnx_dir: Path, wav16: np.ndarray) -> None:
    encoder = SpeakerEncoder(onnx_dir / "campplus.onnx")
    a = encoder.embed(wav16)
    assert a.shape == (192,) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, encoder.embed(wav16))
    other = speech("A completely different sentence, spoken by another voice.", voice="en+f3")
    assert not np.allclose(a, encoder.embed(other))


def test_speaker_input_name_comes_from_the_file(onnx_dir: Path, tmp_path: Path,
                                                 wav16: np.ndarray) -> None:
    model = onnx.load(str(onnx_dir / "campplus.onnx"))
    model.graph.input[0].name = "fbank_feats"
    for node in model.graph.node:
        node.input[:] = ["fbank_feats" if name == "input" else name for name in node.input]
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    renamed = SpeakerEncoder(tmp_path / "renamed.onnx").embed(wav16)
    np.testing.assert_array_equal(renamed, SpeakerEncoder(onnx_dir / "campplus.onnx").embed(wav16))


def test_speech_tokenizer_gives_25hz_codes(onnx_dir: Path, wav16: np.ndarray) -> None:
    tokenizer = SpeechTokenizer(onnx_dir / "speech_tokenizer_v2_25hz.onnx")
    codes = tokenizer.codes(wav16)
    frames = len(wav16) // 160
    assert codes.dtype == np.int64
    assert codes.shape == (-(-frames // 4),)
    assert 0 <= codes.min() and codes.max() <= 6560
    assert len(set(codes.tolist())) > 5
    np.testing.assert_array_equal(codes, tokenizer.codes(wav16))
    with pytest.raises(ValueError, match="30 s"):
        tokenizer.codes(np.zeros(31 * 16_000, np.float32))


def test_missing_or_corrupt_model_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="campplus"):
        SpeakerEncoder(tmp_path / "campplus.onnx")
    (tmp_path / "speech_tokenizer_v2_25hz.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="cannot load speech tokenizer"):
        SpeechTokenizer(tmp_path / "speech_tokenizer_v2_25hz.onnx")
