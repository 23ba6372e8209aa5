"""Token2wav: loading a token2wav/ folder, offline synthesis and the streaming scheme (f.5)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import run_oracle
from tokenizer_audio.checkpoint import TINY_HIFT_DIMS, write_token2wav
from tokenizer_audio.flow import FlowLoadError
from tokenizer_audio.token2wav import Token2wav
from tokenizer_audio.types import VoiceError

SR = 24_000
CODE = 960  # samples per code
FADE = 3840  # cross-fade / held-back samples (8 mel frames)


@dataclass(frozen=True)
class RandomVoice:
    """A voice with random prompt features (the registry is tested with T2's front end)."""

    content_hash: str
    prompt_codes: np.ndarray
    prompt_mel: np.ndarray
    xvector: np.ndarray


def random_voice(seed: int, codes: int = 60) -> RandomVoice:
    rs = np.random.RandomState(seed)
    return RandomVoice(f"random-{seed}-{codes}", rs.randint(0, 6561, codes).astype(np.int64),
                       (rs.randn(2 * codes, 80) - 5).astype(np.float32),
                       rs.randn(192).astype(np.float32))


def codes_of(seed: int, n: int) -> list[int]:
    return np.random.RandomState(seed).randint(0, 6561, n).tolist()


@pytest.fixture(scope="module")
def t2w_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_token2wav(tmp_path_factory.mktemp("t2w") / "token2wav", size="tiny", seed=0)


@pytest.fixture(scope="module")
def t2w(t2w_dir: Path) -> Token2wav:
    torch.set_num_threads(1)
    return Token2wav(t2w_dir)


def test_first_audio_after_28_codes_then_one_second_per_25(t2w: Token2wav) -> None:
    stream = t2w.stream(random_voice(1))
    codes = codes_of(2, 53)
    assert stream.feed(codes[:27]).size == 0
    first = stream.feed(codes[27:28])
    assert first.dtype == np.float32 and first.size == SR - FADE  # 1 s minus the held-back tail
    assert stream.feed(codes[28:52]).size == 0
    assert stream.feed(codes[52:53]).size == SR
    tail = stream.finish()
    total = first.size + SR + tail.size
    assert total == 53 * CODE  # every code becomes 40 ms, nothing lost or duplicated
    assert np.abs(tail).max() <= 0.99 and np.isfinite(tail).all()
    with pytest.raises(RuntimeError, match="finished"):
        stream.feed(codes[:1])


def test_streamed_audio_equals_vocoding_the_streamed_mel_in_one_pass(
        t2w: Token2wav, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunking, caches and cross-fades line up: outside the cross-fade regions the stream is
    one-pass vocoding of the same mel.

    The source is made silent-unvoiced (F0 = 0, no noise): with voiced frames the reference
    scheme restarts the harmonics' phase at every call (only the first 3840 source samples come
    from the cache), so voiced audio legitimately drifts from a one-pass rendering.
    """
    mels: list[torch.Tensor] = []
    original = t2w.flow.stream_step

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        out = original(*args, **kwargs)
        mels.extend(out)
        return out

    classifier = t2w.hift.f0_predictor.classifier
    saved = classifier.weight.detach().clone(), classifier.bias.detach().clone()
    monkeypatch.setattr(t2w.flow, "stream_step", recording)
    monkeypatch.setattr(t2w.hift, "noise_scale", 0.0)
    try:
        with torch.no_grad():  # F0 = |Linear(.)| = 0 everywhere: an unvoiced source
            classifier.weight.zero_()
            classifier.bias.zero_()
        stream = t2w.stream(random_voice(3))
        codes = codes_of(4, 4 * 25 + 3 + 12)
        audio = np.concatenate([stream.feed(codes[i:i + 10]) for i in range(0, len(codes), 10)]
                               + [stream.finish()])
        with torch.inference_mode():
            whole = t2w.hift(torch.cat(mels, dim=1)[None])[0].numpy()
    finally:
        with torch.no_grad():
            classifier.weight.copy_(saved[0])
            classifier.bias.copy_(saved[1])
    assert audio.shape == whole.shape
    boundaries = np.cumsum([m.shape[1] * 480 for m in mels])[:-1]
    in_fade = np.zeros(audio.size, bool)
    for b in boundaries:
        in_fade[b - FADE:b] = True  # the held-back tail, cross-faded with the re-vocoded head
    scale = np.abs(whole).max()
    outside = np.abs(audio - whole)[~in_fade].max() / scale
    inside = np.abs(audio - whole)[in_fade].max() / scale
    # Measured on tiny random weights: outside ~2e-4 (HiFT sees slightly more than 8 frames of
    # context); inside up to ~0.1 (two renderings blended).
    assert outside < 1e-3
    assert inside < 0.5


def test_no_sample_jump_at_chunk_boundaries(t2w: Token2wav) -> None:
    stream = t2w.stream(random_voice(5))
    codes = codes_of(6, 4 * 25 + 3)
    pieces = [stream.feed(codes[i:i + 25]) for i in range(0, len(codes), 25)] + [stream.finish()]
    audio = np.concatenate(pieces)
    step = np.abs(np.diff(audio))
    joins = np.cumsum([p.size for p in pieces if p.size])[:-1]
    # A join between emitted pieces is no larger a step than the signal's own largest ones.
    assert step[joins - 1].max() <= np.quantile(step, 0.999)


def test_offline_uses_the_whole_answer(t2w: Token2wav) -> None:
    voice = random_voice(7)
    codes = codes_of(8, 40)
    wav = t2w.offline(codes, voice)
    assert wav.dtype == np.float32 and wav.shape == (40 * CODE,)
    assert 0 < np.abs(wav).max() <= 0.99
    other = t2w.offline(codes[:20] + codes_of(9, 20), voice)
    assert not np.allclose(wav[: 10 * CODE], other[: 10 * CODE])  # later codes matter (attention)


def test_registry_voices_by_name(t2w: Token2wav) -> None:
    assert "default" in t2w.voices.names()
    stream = t2w.stream("default")
    assert stream.feed(codes_of(10, 28)).size == SR - FADE
    stream.cancel()
    with pytest.raises(VoiceError, match="unknown voice"):
        t2w.stream("nobody")


def test_cancel_frees_the_caches_and_bad_codes_are_rejected(t2w: Token2wav) -> None:
    voice = random_voice(11)
    prompt = t2w.voice_prompt(voice)
    stream = t2w.stream(voice)
    stream.feed(codes_of(12, 56))
    assert stream.nbytes() > 0
    with pytest.raises(ValueError, match="0..6560"):
        stream.feed([5, 6561])
    assert len(stream.buffer) == 6  # the bad batch was not queued
    stream.cancel()
    assert stream.nbytes() == 0 and stream.flow is None and not stream.buffer
    assert t2w.voice_prompt(voice) is prompt  # the shared prompt caches stay for other streams


def test_missing_or_corrupt_files_are_clear_errors(tmp_path: Path, t2w_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="flow.yaml"):
        Token2wav(tmp_path)
    broken = tmp_path / "token2wav"
    broken.mkdir()
    for name in ("flow.yaml", "hift.pt", "campplus.onnx", "speech_tokenizer_v2_25hz.onnx"):
        (broken / name).write_bytes((t2w_dir / name).read_bytes())
    (broken / "flow.pt").write_bytes(b"\0" * 100)
    with pytest.raises(FlowLoadError, match="flow.pt"):
        Token2wav(tmp_path)


def test_int8_precision_streams_the_same_speech_closely(t2w: Token2wav, t2w_dir: Path) -> None:
    fast = Token2wav(t2w_dir, precision="int8")
    voice, codes = random_voice(21), codes_of(22, 2 * 25 + 3)
    exact_stream, fast_stream = t2w.stream(voice), fast.stream(voice)
    exact = np.concatenate([exact_stream.feed(codes), exact_stream.finish()])
    approx = np.concatenate([fast_stream.feed(codes), fast_stream.finish()])
    assert approx.shape == exact.shape == (len(codes) * CODE,)
    # Measured: 2.8 % relative L2 of the waveform (same source noise), RMS equal within 0.1 %.
    assert 0 < np.linalg.norm(approx - exact) / np.linalg.norm(exact) < 0.1
    assert abs(np.sqrt(np.mean(approx ** 2)) / np.sqrt(np.mean(exact ** 2)) - 1) < 0.02


def test_offline_and_streamed_waveforms_equal_the_reference(t2w_dir: Path,
                                                            tmp_path: Path) -> None:
    """Codes to waveform through flow and HiFT, ours against StepFun's Token2wav on the same
    weights, flow noise and (zeroed) source noise: offline float samples and streamed int16
    PCM, with the streaming client's 28-in, keep-3 buffering and a short last chunk."""
    ours = Token2wav(t2w_dir, load_voices=False)
    ours.hift.noise_scale = 0.0
    voice, codes = random_voice(31, 50), codes_of(32, 2 * 25 + 3 + 7)
    torch.save({"prompt_codes": voice.prompt_codes.tolist(),
                "prompt_mel": torch.from_numpy(voice.prompt_mel),
                "xvector": torch.from_numpy(voice.xvector), "codes": codes,
                "noise": ours.flow.decoder.rand_noise.clone()}, tmp_path / "inputs.pt")
    run_oracle("t2w_e2e_oracle.py", {
        "dir": str(t2w_dir), "inputs": str(tmp_path / "inputs.pt"),
        "out": str(tmp_path / "out.pt"),
        "hift_widths": {"base_channels": TINY_HIFT_DIMS.base_channels,
                        "f0_channels": TINY_HIFT_DIMS.f0_channels}})
    ref = torch.load(tmp_path / "out.pt", weights_only=True)

    offline = ours.offline(codes, voice)
    assert offline.shape == tuple(ref["offline"].shape) == (len(codes) * CODE,)
    assert np.abs(offline).max() > 0.01  # the random vocoder does produce sound
    np.testing.assert_allclose(offline, ref["offline"].numpy(), rtol=0, atol=1e-5)

    stream = ours.stream(voice)
    wav = np.concatenate([stream.feed(codes), stream.finish()])
    pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16)  # the reference truncates (f.5a.4)
    assert pcm.shape == tuple(ref["stream"].shape) == (len(codes) * CODE,)
    assert np.abs(pcm.astype(np.int32) - ref["stream"].numpy()).max() <= 1
