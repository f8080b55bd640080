"""Pictures and sounds for multimodal models: decoded safely, bounded in size, turned into model inputs.

The chat template writes one placeholder token per medium (Qwen2-VL:
``<|vision_start|><|image_pad|><|vision_end|>``; Qwen2-Audio: ``<|audio_bos|><|AUDIO|><|audio_eos|>``);
the model needs that token repeated once per feature. The number depends on the picture's
size or the clip's length, so it is known only once the medium is processed:
:meth:`MediaProcessing.expand` repeats each placeholder in the encoded prompt, and
prompt-length limits and ``usage`` then count the tokens the model sees.

Images are bounded twice, as in training: ``image_max_pixels`` / ``image_min_pixels``
(the config keys LLaMA-Factory uses) resize the picture keeping its aspect ratio, then the
model's own image processor snaps it to its patch grid. A picture whose header claims more
than :data:`MAX_DECODED_PIXELS` is refused before it is decoded (a decompression bomb).
Audio is read from WAV (PCM) with the standard library, mixed to mono, resampled (in the frequency domain) to the
feature extractor's rate and cut to its window (30 s for Whisper features).
"""

from __future__ import annotations

import io
import logging
import math
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

MAX_DECODED_PIXELS = 64 * 1024 * 1024
# Model types whose image features fill repeated placeholder tokens and whose processor
# reports a (t, h, w) grid per picture; their tokens count grid.prod() / merge_size**2.
GRID_VISION_MODELS = {"qwen2_vl", "qwen2_5_vl"}
# Model types whose audio encoder reads Whisper log-mel features of up to 30 s.
WHISPER_AUDIO_MODELS = {"qwen2_audio"}


class MediaInputError(ValueError):
    """A medium that cannot be used (undecodable, absurd size, wrong count); answered as HTTP 400."""


@dataclass
class MediaInputs:
    """Model-ready tensors for the media of one request, and how many tokens each one fills."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    tokens_per_item: list[int] = field(default_factory=list)


class MediaProcessing:
    """What a multimodal model needs from the server: which media it takes and how to prepare them."""

    kinds: frozenset[str] = frozenset()
    #: position ids come from the model's ``get_rope_index`` (M-RoPE), not from the row length
    mrope = False
    placeholder_token_id: int
    noun = "media"

    def process(self, blobs: list[bytes], where: list[str] | None = None) -> MediaInputs:
        raise NotImplementedError

    def expand(self, prompt_ids: list[int], inputs: MediaInputs) -> list[int]:
        """``prompt_ids`` with each placeholder repeated once per feature of its medium."""
        token = self.placeholder_token_id
        places = sum(1 for t in prompt_ids if t == token)
        if places != len(inputs.tokens_per_item):
            raise MediaInputError(
                f"the messages hold {len(inputs.tokens_per_item)} {self.noun}s but the prompt has {places} "
                f"{self.noun} placeholders (is the {self.noun} token written in the text?)"
            )
        counts = iter(inputs.tokens_per_item)
        out: list[int] = []
        for t in prompt_ids:
            if t == token:
                out.extend([t] * next(counts))
            else:
                out.append(t)
        return out


def media_processing_for(
    model_config: Any, path: str, *, image_max_pixels: int, image_min_pixels: int
) -> MediaProcessing | None:
    """The media processing of a supported multimodal model folder; None for a text model."""
    model_type = getattr(model_config, "model_type", None)
    if model_type not in GRID_VISION_MODELS | WHISPER_AUDIO_MODELS:
        return None
    if not (Path(path) / "preprocessor_config.json").is_file():
        logger.warning("%s has no preprocessor_config.json; media will be refused", path)
        return None
    if model_type in WHISPER_AUDIO_MODELS:
        return AudioProcessing.for_model(model_config, path)
    return ImageProcessing.for_model(
        model_config, path, max_pixels=image_max_pixels, min_pixels=image_min_pixels
    )


class ImageProcessing(MediaProcessing):
    """A vision-language model's image processor, its placeholder token and the size bounds."""

    kinds = frozenset({"image"})
    mrope = True
    noun = "image"

    def __init__(
        self,
        image_processor: Any,
        *,
        image_token_id: int,
        video_token_id: int | None = None,
        merge_size: int = 2,
        max_pixels: int = 768 * 768,
        min_pixels: int = 32 * 32,
    ) -> None:
        self.image_processor = image_processor
        self.image_token_id = self.placeholder_token_id = image_token_id
        self.video_token_id = video_token_id
        self.merge_size = merge_size
        self.max_pixels = max_pixels
        self.min_pixels = min_pixels

    @classmethod
    def for_model(cls, model_config: Any, path: str, *, max_pixels: int, min_pixels: int) -> ImageProcessing:
        from transformers import AutoImageProcessor

        return cls(
            AutoImageProcessor.from_pretrained(path),  # the PIL backend when torchvision is absent
            image_token_id=int(model_config.image_token_id),
            video_token_id=getattr(model_config, "video_token_id", None),
            merge_size=int(getattr(model_config.vision_config, "spatial_merge_size", 2)),
            max_pixels=max_pixels,
            min_pixels=min_pixels,
        )

    def process(self, images: list[bytes], where: list[str] | None = None) -> MediaInputs:
        """Decode and process ``images`` (raw file bytes); ``where`` names each for errors."""
        if not images:
            return MediaInputs()
        where = where or [f"image {i + 1}" for i in range(len(images))]
        pictures = [self._decode(data, name) for data, name in zip(images, where, strict=True)]
        try:
            out = self.image_processor(images=pictures, return_tensors="pt")
        except ValueError as exc:  # e.g. an aspect ratio the patch grid cannot take
            raise MediaInputError(f"{where[0]}: the image cannot be processed ({exc})") from None
        grid = out["image_grid_thw"]
        counts = [int(n) for n in (grid.prod(-1) // self.merge_size**2).tolist()]
        return MediaInputs({"pixel_values": out["pixel_values"], "image_grid_thw": grid}, counts)

    def _decode(self, data: bytes, name: str) -> Any:
        from PIL import Image, UnidentifiedImageError

        try:
            picture = Image.open(io.BytesIO(data))  # reads the header only
        except Image.DecompressionBombError:
            raise MediaInputError(
                f"{name}: the image is larger than the {MAX_DECODED_PIXELS} pixel limit"
            ) from None
        except (UnidentifiedImageError, OSError, ValueError):
            raise MediaInputError(
                f"{name}: not an image that can be decoded (PNG, JPEG, WebP, GIF, ...)"
            ) from None
        width, height = picture.size
        if width * height > MAX_DECODED_PIXELS:
            raise MediaInputError(
                f"{name}: the image is {width}x{height} pixels, more than the {MAX_DECODED_PIXELS} pixel limit"
            )
        try:
            picture = picture.convert("RGB")
        except (OSError, ValueError, SyntaxError):
            raise MediaInputError(f"{name}: the image data is damaged or truncated") from None
        return bounded(picture, self.max_pixels, self.min_pixels)

    def token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        """0 for text, 1 for image and 2 for video tokens (what M-RoPE position ids are built from)."""
        types = (input_ids == self.image_token_id).int()
        if self.video_token_id is not None:
            types = types + 2 * (input_ids == self.video_token_id).int()
        return types


def bounded(picture: Any, max_pixels: int, min_pixels: int) -> Any:
    """``picture`` resized (aspect ratio kept) so its area lies within [min_pixels, max_pixels]."""
    width, height = picture.size
    area = width * height
    if area > max_pixels:
        scale = math.sqrt(max_pixels / area)
    elif area < min_pixels:
        scale = math.sqrt(min_pixels / area)
    else:
        return picture
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    return picture.resize(size)


class AudioProcessing(MediaProcessing):
    """Qwen2-Audio: WAV clips to Whisper log-mel features; one ``<|AUDIO|>`` per encoder output frame."""

    kinds = frozenset({"audio"})
    noun = "audio clip"

    def __init__(self, feature_extractor: Any, *, audio_token_id: int) -> None:
        self.feature_extractor = feature_extractor
        self.placeholder_token_id = audio_token_id
        self.rate = int(feature_extractor.sampling_rate)
        self.max_samples = int(feature_extractor.n_samples)

    @classmethod
    def for_model(cls, model_config: Any, path: str) -> AudioProcessing:
        from transformers import AutoFeatureExtractor

        token = getattr(model_config, "audio_token_id", None)
        if token is None:
            token = model_config.audio_token_index
        return cls(AutoFeatureExtractor.from_pretrained(path), audio_token_id=int(token))

    def process(self, blobs: list[bytes], where: list[str] | None = None) -> MediaInputs:
        if not blobs:
            return MediaInputs()
        where = where or [f"audio {i + 1}" for i in range(len(blobs))]
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
        return MediaInputs(
            {"input_features": out["input_features"], "feature_attention_mask": mask},
            [int(n) for n in tokens.tolist()],
        )

    def _decode(self, data: bytes, name: str) -> np.ndarray:
        """Mono float samples at the extractor's rate, at most its window long."""
        try:
            with wave.open(io.BytesIO(data)) as clip:
                channels, width, rate = clip.getnchannels(), clip.getsampwidth(), clip.getframerate()
                frames = clip.readframes(clip.getnframes())
        except (wave.Error, EOFError, ValueError):
            raise MediaInputError(
                f"{name}: not a WAV (PCM) audio file; convert other formats first, e.g. "
                "`ffmpeg -i in.mp3 -ar 16000 out.wav`"
            ) from None
        if width not in (1, 2, 3, 4) or rate <= 0 or channels <= 0:
            raise MediaInputError(f"{name}: unsupported WAV sample format ({width} bytes, {rate} Hz)")
        samples = _pcm_to_float(frames, width)
        usable = len(samples) - len(samples) % channels
        if usable == 0:
            raise MediaInputError(f"{name}: the audio clip is empty")
        mono = samples[:usable].reshape(-1, channels).mean(axis=1)
        mono = mono[: int(math.ceil(self.max_samples * rate / self.rate))]  # what the window can hold
        if rate != self.rate:
            mono = resample(mono, max(1, round(len(mono) * self.rate / rate)))
        return mono[: self.max_samples].astype(np.float32)


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
