"""Audio front end: chunks, frame and placeholder counts (spec c), log-mel vs the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import audio
from tests.helpers import run_oracle, speech

# spec c test vectors (HF rule): seconds -> placeholders
SPEC_VECTORS = {1: 13, 2: 25, 3: 38, 5: 63, 10: 125, 15: 188, 20: 250, 25: 313}


@pytest.mark.parametrize(("seconds", "expected"), sorted(SPEC_VECTORS.items()))
def test_placeholder_count_matches_spec_vectors(seconds: int, expected: int) -> None:
    assert audio.placeholder_count(seconds * audio.SAMPLE_RATE) == expected


def test_frame_counts_and_hf_rule() -> None:
    assert audio.num_mel_frames(16_000) == 102
    assert audio.num_mel_frames(400_000) == 2502
    # HF rule, not vLLM's: these are the lengths where the two rules disagree (spec c)
    assert audio.placeholder_count(1_600) == 1
    assert audio.placeholder_count(8_000) == 6
    assert audio.placeholder_count(116_800) == 91
    for n in (1, 159, 160, 161, 12_345, 399_999, 400_000, audio.MAX_CHUNK_SAMPLES):
        t = audio.num_mel_frames(n)
        assert t == (n - 1) // 160 + 3 == -(-n // 160) + 2
        assert audio.encoder_input_length(t) == -(-n // 160)
        assert t == audio.log_mel(np.zeros(n, dtype=np.float32)).shape[1]


def test_placeholder_count_rejects_empty_and_too_long_chunks() -> None:
    with pytest.raises(ValueError, match="samples"):
        audio.placeholder_count(0)
    with pytest.raises(ValueError, match="samples"):
        audio.placeholder_count(audio.MAX_CHUNK_SAMPLES + 1)


def test_split_chunks_gives_25_second_pieces() -> None:
    samples = np.arange(2 * audio.CHUNK_SAMPLES + 5, dtype=np.float32)
    chunks = audio.split_chunks(samples)
    assert [len(c) for c in chunks] == [audio.CHUNK_SAMPLES, audio.CHUNK_SAMPLES, 5]
    np.testing.assert_array_equal(np.concatenate(chunks), samples)
    assert audio.split_chunks(np.zeros(0, dtype=np.float32)) == []
    with pytest.raises(ValueError, match="mono"):
        audio.split_chunks(np.zeros((2, 100), dtype=np.float32))


def test_log_mel_range_and_input_types() -> None:
    wave = speech("Hello there, how are you today?")
    mel = audio.log_mel(wave)
    assert mel.dtype == torch.float32 and mel.shape == (128, audio.num_mel_frames(len(wave)))
    # dynamic range clamp: at most 8 log10 units, i.e. 2.0 after normalisation
    assert float(mel.max() - mel.min()) <= 2.0 + 1e-6
    torch.testing.assert_close(audio.log_mel(torch.from_numpy(wave)), mel)
    with pytest.raises(ValueError, match="mono"):
        audio.log_mel(np.zeros((2, 1000), dtype=np.float32))


def test_batch_mels_pads_with_zero_and_reports_hf_lengths() -> None:
    a = audio.log_mel(speech("one"))
    b = audio.log_mel(speech("one two three four five"))
    mels, lengths = audio.batch_mels([a, b])
    t_max = max(a.shape[1], b.shape[1])
    assert mels.shape == (2, 128, t_max)
    assert lengths.tolist() == [a.shape[1] - 2, b.shape[1] - 2]
    torch.testing.assert_close(mels[0, :, : a.shape[1]], a)
    assert torch.all(mels[0, :, a.shape[1] :] == 0.0)
    with pytest.raises(ValueError):
        audio.batch_mels([torch.zeros(80, 10)])


@pytest.mark.oracle
def test_log_mel_equals_reference(tmp_path) -> None:
    rng = np.random.default_rng(0)
    waves = {
        "speech": speech("The quick brown fox jumps over the lazy dog."),
        "noise": (0.3 * rng.standard_normal(37_123)).astype(np.float32),
        "short": (0.1 * rng.standard_normal(1_000)).astype(np.float32),
    }
    pairs = []
    for name, wave in waves.items():
        np.save(tmp_path / f"{name}.npy", wave)
        pairs.append([str(tmp_path / f"{name}.npy"), str(tmp_path / f"{name}-mel.npy")])
    result = run_oracle("logmel.py", {"pairs": pairs})
    for (name, wave), frames in zip(waves.items(), result["frames"], strict=True):
        ours = audio.log_mel(wave).numpy()
        ref = np.load(tmp_path / f"{name}-mel.npy")
        assert ours.shape == ref.shape == (128, frames), name
        np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0, err_msg=name)
