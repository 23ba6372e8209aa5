"""Prompt voices: WAV -> prompt codes, prompt mel and x-vector, computed once per content hash."""

from __future__ import annotations

import hashlib
import io
import re
import threading
from dataclasses import dataclass
from importlib import resources
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from tokenizer_audio.mel import SAMPLE_RATE as MEL_RATE
from tokenizer_audio.mel import mel_spectrogram
from tokenizer_audio.s3tokenizer import SAMPLE_RATE as CODE_RATE
from tokenizer_audio.s3tokenizer import SpeechTokenizer
from tokenizer_audio.speaker import SpeakerEncoder
from tokenizer_audio.types import VoiceError

MIN_SECONDS, MAX_SECONDS = 3.0, 30.0
SILENCE_PEAK = 1e-3  # a prompt whose loudest sample is below this (-60 dBFS) is silent
DEFAULT_VOICE = "default"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # same rule as the voices REST API
MEL_FRAMES_PER_CODE = 2  # 50 Hz mel per 25 Hz code (f.1 step 3)
_CACHE_VERSION = "1"


@dataclass(frozen=True, eq=False)
class Voice:
    """A prompt voice ready for token2wav (arrays are read-only and shared by every stream)."""

    name: str
    content_hash: str  # sha256 of the WAV bytes
    prompt_codes: np.ndarray  # int64 [N], 25 Hz
    prompt_mel: np.ndarray  # float32 [2N, 80], 50 Hz log-mel of the 24 kHz prompt
    xvector: np.ndarray  # float32 [192]


@dataclass(frozen=True)
class _Features:
    codes: np.ndarray
    mel: np.ndarray
    xvector: np.ndarray


def default_voice_wav() -> Path:
    """The packaged default prompt (espeak-ng, 16 kHz mono, 7.8 s)."""
    with resources.as_file(resources.files("tokenizer_audio") / "data" / "default_voice.wav") as p:
        return Path(p)


def decode_prompt(wav_bytes: bytes) -> tuple[np.ndarray, int]:
    """Audio file bytes -> (float32 samples [N, channels], rate); VoiceError when unusable."""
    try:
        samples, rate = sf.read(io.BytesIO(wav_bytes), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise VoiceError(f"not a readable audio file: {exc}") from exc
    if samples.shape[0] == 0 or rate <= 0:
        raise VoiceError("the audio file holds no samples")
    seconds = samples.shape[0] / rate
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise VoiceError(
            f"a prompt voice must be {MIN_SECONDS:g}-{MAX_SECONDS:g} s long, got {seconds:.2f} s"
        )
    if not np.isfinite(samples).all():
        raise VoiceError("the audio holds NaN or infinite samples")
    if float(np.abs(samples).max()) < SILENCE_PEAK:
        raise VoiceError("the prompt audio is silent")
    return samples, int(rate)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling of [N] float samples (no torchaudio)."""
    if rate == target:
        return samples.astype(np.float32)
    g = gcd(rate, target)
    return resample_poly(samples, target // g, rate // g).astype(np.float32)


def fit_frames(mel: np.ndarray, frames: int) -> np.ndarray:
    """Crop, or replicate the last frame, so that `mel` [T, 80] has exactly `frames` rows."""
    if mel.shape[0] >= frames:
        return mel[:frames]
    return np.concatenate([mel, np.repeat(mel[-1:], frames - mel.shape[0], axis=0)])


class VoiceRegistry:
    """Named prompt voices for one token2wav folder; features computed once per WAV content.

    Voices come from the packaged default WAV, from `voices_dir/*.wav` (computed on first use)
    and from `add`. Features are kept in memory and, with a `voices_dir`, in
    `voices_dir/.cache/` keyed by content hash and model files. Thread-safe.
    """

    def __init__(
        self,
        token2wav_dir: str | Path,
        voices_dir: str | Path | None = None,
        default_voice_wav: str | Path | None = None,
    ) -> None:
        t2w = Path(token2wav_dir)
        self._tokenizer = SpeechTokenizer(t2w / "speech_tokenizer_v2_25hz.onnx")
        self._speaker = SpeakerEncoder(t2w / "campplus.onnx")
        self._model_tag = _fingerprint(
            [t2w / "speech_tokenizer_v2_25hz.onnx", t2w / "campplus.onnx"]
        )
        self._dir = Path(voices_dir) if voices_dir is not None else None
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
        self._default_wav = Path(default_voice_wav) if default_voice_wav else _packaged_default()
        self._lock = threading.Lock()
        self._voices: dict[str, Voice] = {}
        self._features: dict[str, _Features] = {}

    @property
    def default_name(self) -> str:
        return DEFAULT_VOICE

    def names(self) -> list[str]:
        """Every voice name: the default first, then the others sorted."""
        names = set(self._voices)
        if self._dir is not None:
            names.update(p.stem for p in self._dir.glob("*.wav") if NAME.match(p.stem))
        names.discard(DEFAULT_VOICE)
        return [DEFAULT_VOICE, *sorted(names)]

    def get(self, name: str) -> Voice:
        """The voice called `name`, computing its features on first use; VoiceError if unknown."""
        with self._lock:
            voice = self._voices.get(name)
        if voice is not None:
            return voice
        path = self._path_of(name)
        if path is None:
            raise VoiceError(f"unknown voice {name!r}; known voices: {', '.join(self.names())}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise VoiceError(f"cannot read the prompt of voice {name!r}: {exc}") from exc
        return self._register(name, data)

    def add(self, name: str, wav_bytes: bytes) -> Voice:
        """Register (or replace) voice `name` from audio bytes; writes `voices_dir/<name>.wav`."""
        if not NAME.match(name):
            raise VoiceError(
                "voice name must be 1-64 letters, digits, '_', '.', '-' starting with a letter or "
                "digit"
            )
        if name == DEFAULT_VOICE:
            raise VoiceError(f"the voice name {DEFAULT_VOICE!r} is reserved")
        voice = self._register(name, wav_bytes)
        if self._dir is not None:
            target = self._dir / f"{name}.wav"
            tmp = target.with_suffix(".wav.tmp")
            tmp.write_bytes(wav_bytes)
            tmp.replace(target)
        return voice

    def _path_of(self, name: str) -> Path | None:
        if name == DEFAULT_VOICE:
            return self._default_wav
        if self._dir is not None and NAME.match(name):
            path = self._dir / f"{name}.wav"
            if path.is_file():
                return path
        return None

    def _register(self, name: str, wav_bytes: bytes) -> Voice:
        content_hash = hashlib.sha256(wav_bytes).hexdigest()
        with self._lock:
            features = self._features.get(content_hash)
        if features is None:
            features = self._load_cached(content_hash) or self._compute(wav_bytes, content_hash)
        voice = Voice(name, content_hash, features.codes, features.mel, features.xvector)
        with self._lock:
            self._features[content_hash] = features
            self._voices[name] = voice
        return voice

    def _compute(self, wav_bytes: bytes, content_hash: str) -> _Features:
        samples, rate = decode_prompt(wav_bytes)
        # Codes and x-vector from the first channel at 16 kHz, mel from the channel mean at
        # 24 kHz, as the reference prepares prompts (f.1; spec i.7 leaves stereo open).
        wav16 = resample(samples[:, 0], rate, CODE_RATE)
        wav24 = resample(samples.mean(axis=1), rate, MEL_RATE)
        try:
            codes = self._tokenizer.codes(wav16)
            xvector = self._speaker.embed(wav16)
        except ValueError as exc:
            raise VoiceError(f"cannot compute prompt features: {exc}") from exc
        if codes.size == 0:
            raise VoiceError("the speech tokenizer gave no codes for this prompt")
        mel = mel_spectrogram(wav24).numpy().T  # [T, 80]
        mel = fit_frames(mel, MEL_FRAMES_PER_CODE * codes.size).astype(np.float32)
        features = _Features(_frozen(codes.astype(np.int64)), _frozen(mel), _frozen(xvector))
        self._save_cached(content_hash, features)
        return features

    def _cache_file(self, content_hash: str) -> Path | None:
        if self._dir is None:
            return None
        return self._dir / ".cache" / f"{content_hash}-{self._model_tag}.npz"

    def _load_cached(self, content_hash: str) -> _Features | None:
        path = self._cache_file(content_hash)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path) as data:
                codes, mel, xvector = data["codes"], data["mel"], data["xvector"]
        except Exception:  # a damaged cache entry is recomputed, never trusted
            return None
        if mel.shape != (MEL_FRAMES_PER_CODE * codes.size, 80) or xvector.ndim != 1:
            return None
        return _Features(_frozen(codes.astype(np.int64)), _frozen(mel.astype(np.float32)),
                         _frozen(xvector.astype(np.float32)))

    def _save_cached(self, content_hash: str, features: _Features) -> None:
        path = self._cache_file(content_hash)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, codes=features.codes, mel=features.mel, xvector=features.xvector)
        tmp.replace(path)


def _packaged_default() -> Path:
    return default_voice_wav()


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


def _fingerprint(paths: list[Path]) -> str:
    """Short tag of the model files (size + first MiB), so cached features follow the models."""
    digest = hashlib.sha256(_CACHE_VERSION.encode())
    for path in paths:
        digest.update(str(path.stat().st_size).encode())
        with path.open("rb") as f:
            digest.update(f.read(1 << 20))
    return digest.hexdigest()[:16]
