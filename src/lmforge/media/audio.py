"""Sound for Qwen2-Audio: WAV (PCM) clips to Whisper log-mel features.

WAV clips are read with the standard library ``wave`` module (no ffmpeg needed), mixed to
mono, resampled in the frequency domain to the feature extractor's rate and cut to its window
(30 s). Other formats (MP3, FLAC, ...) are decoded by PyAV when it is installed. The encoder halves the frame rate twice, so each second of sound fills 25
``<|AUDIO|>`` tokens.
"""

from __future__ import annotations

import io
import math
import wave
from typing import TYPE_CHECKING, Any

import numpy as np

from lmforge.media.inputs import MediaInputError, MediaInputs, MediaProcessing

if TYPE_CHECKING:
    from transformers import PretrainedConfig


class AudioProcessing(MediaProcessing):
    """Qwen2-Audio: WAV clips to Whisper log-mel features; one ``<|AUDIO|>`` per encoder output frame."""

    def __init__(self, feature_extractor: Any, *, audio_token_id: int) -> None:
        self.feature_extractor = feature_extractor
        self.placeholders = {"audio": audio_token_id}
        self.rate = int(feature_extractor.sampling_rate)
        self.max_samples = int(feature_extractor.n_samples)

    @classmethod
    def for_model(cls, model_config: PretrainedConfig, path: str) -> AudioProcessing:
        from transformers import AutoFeatureExtractor

        token = getattr(model_config, "audio_token_id", None)
        if token is None:
            token = model_config.audio_token_index
        return cls(AutoFeatureExtractor.from_pretrained(path), audio_token_id=int(token))

    def _process(self, blobs: list[bytes], where: list[str], kinds: list[str]) -> MediaInputs:
        if not blobs:
            return MediaInputs()
        clips = [self._decode(data, name) for data, name in zip(blobs, where, strict=True)]
        out = self.feature_extractor(
            clips,
            sampling_rate=self.rate,
            return_attention_mask=True,
            padding="max_length",
            return_tensors="pt",
        )
        mask = out["attention_mask"]
        lengths = mask.sum(-1)
        tokens = ((lengths - 1) // 2 + 1 - 2) // 2 + 1  # two stride-2 stages: conv, then pooling
        token = self.placeholders["audio"]
        return MediaInputs(
            {"input_features": out["input_features"], "feature_attention_mask": mask},
            [(token, int(n)) for n in tokens.tolist()],
            decoded=clips,
        )

    def _decode(self, data: bytes, name: str) -> np.ndarray:
        """Mono float samples at the extractor's rate, at most its window long."""
        try:
            with wave.open(io.BytesIO(data)) as clip:
                channels, width, rate = clip.getnchannels(), clip.getsampwidth(), clip.getframerate()
                frames = clip.readframes(clip.getnframes())
        except (wave.Error, EOFError, ValueError):
            return self._decode_compressed(data, name)
        if width not in (1, 2, 3, 4) or rate <= 0 or channels <= 0:
            raise MediaInputError(f"{name}: unsupported WAV sample format ({width} bytes, {rate} Hz)")
        samples = _pcm_to_float(frames, width)
        usable = len(samples) - len(samples) % channels
        if usable == 0:
            raise MediaInputError(f"{name}: the audio clip is empty")
        mono = samples[:usable].reshape(-1, channels).mean(axis=1)
        return self._fit(mono, rate)

    def _fit(self, mono: np.ndarray, rate: int) -> np.ndarray:
        mono = mono[: int(math.ceil(self.max_samples * rate / self.rate))]  # what the window can hold
        if rate != self.rate:
            mono = resample(mono, max(1, round(len(mono) * self.rate / rate)))
        return mono[: self.max_samples].astype(np.float32)

    def _decode_compressed(self, data: bytes, name: str) -> np.ndarray:
        """MP3, FLAC, OGG, M4A, ... through PyAV (FFmpeg) when it is installed."""
        try:
            import av
        except ImportError:
            raise MediaInputError(
                f"{name}: not a WAV (PCM) audio file; other formats need PyAV on this machine "
                "(pip install 'lmforge[video]') or converting, e.g. `ffmpeg -i in.mp3 -ar 16000 out.wav`"
            ) from None
        limit = self.max_samples
        try:
            with av.open(io.BytesIO(data), mode="r") as container:
                if not container.streams.audio:
                    raise MediaInputError(f"{name}: the file has no audio stream")
                to_mono = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
                parts, total = [], 0
                for frame in container.decode(audio=0):
                    for out in to_mono.resample(frame):
                        chunk = out.to_ndarray().reshape(-1)
                        parts.append(chunk)
                        total += len(chunk)
                    if total >= limit:
                        break
                for out in to_mono.resample(None):  # what the resampler still holds
                    parts.append(out.to_ndarray().reshape(-1))
        except MediaInputError:
            raise
        except (av.FFmpegError, ValueError, OSError):
            raise MediaInputError(
                f"{name}: not an audio file that can be decoded (WAV, MP3, FLAC, ...)"
            ) from None
        if not parts or sum(len(p) for p in parts) == 0:
            raise MediaInputError(f"{name}: the audio clip is empty")
        return self._fit(np.concatenate(parts).astype(np.float32), self.rate)


def resample(samples: np.ndarray, target: int) -> np.ndarray:
    """Band-limited resampling to ``target`` samples: the spectrum cut (or zero-padded) in the
    frequency domain, so downsampling drops what the new rate cannot hold instead of aliasing it."""
    spectrum = np.fft.rfft(samples)
    bins = target // 2 + 1
    if bins <= len(spectrum):
        spectrum = spectrum[:bins]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(bins - len(spectrum), dtype=spectrum.dtype)])
    return np.fft.irfft(spectrum, n=target) * (target / len(samples))


def _pcm_to_float(frames: bytes, width: int) -> np.ndarray:
    """Little-endian PCM samples (8-bit unsigned, 16/24/32-bit signed) scaled to [-1, 1]."""
    if width == 1:
        return (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 3:
        raw = np.frombuffer(frames[: len(frames) - len(frames) % 3], dtype=np.uint8).reshape(-1, 3)
        values = (
            raw[:, 0].astype(np.int32)
            | (raw[:, 1].astype(np.int32) << 8)
            | (raw[:, 2].astype(np.int32) << 16)
        )
        values = np.where(values >= 1 << 23, values - (1 << 24), values)
        return values.astype(np.float32) / float(1 << 23)
    dtype = np.int16 if width == 2 else np.int32
    usable = len(frames) - len(frames) % width
    return np.frombuffer(frames[:usable], dtype=dtype).astype(np.float32) / float(1 << (8 * width - 1))
