"""Images for vision-language models: decoded safely, bounded in size, turned into model inputs.

The chat template writes one image placeholder token per picture (Qwen2-VL:
``<|vision_start|><|image_pad|><|vision_end|>``); the model needs that token repeated once per
image feature. The number depends on the picture's size after resizing, so it is known only
once the picture is processed: :meth:`ImageProcessing.expand` repeats each placeholder in the
encoded prompt, and prompt-length limits and ``usage`` then count the tokens the model sees.

Images are bounded twice, as in training: ``image_max_pixels`` / ``image_min_pixels``
(the config keys LLaMA-Factory uses) resize the picture keeping its aspect ratio, then the
model's own image processor snaps it to its patch grid. A picture whose header claims more
than :data:`MAX_DECODED_PIXELS` is refused before it is decoded (a decompression bomb).
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

MAX_DECODED_PIXELS = 64 * 1024 * 1024
# Model types whose image features fill repeated placeholder tokens and whose processor
# reports a (t, h, w) grid per picture; their tokens count grid.prod() / merge_size**2.
GRID_VISION_MODELS = {"qwen2_vl", "qwen2_5_vl"}


class MediaInputError(ValueError):
    """A picture that cannot be used (undecodable, absurd size, wrong count); answered as HTTP 400."""


@dataclass
class MediaInputs:
    """Model-ready tensors for the pictures of one request, and how many tokens each one fills."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    tokens_per_item: list[int] = field(default_factory=list)


class ImageProcessing:
    """A vision-language model's image processor, its placeholder token and the size bounds."""

    kinds = frozenset({"image"})

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
        self.image_token_id = image_token_id
        self.video_token_id = video_token_id
        self.merge_size = merge_size
        self.max_pixels = max_pixels
        self.min_pixels = min_pixels

    @classmethod
    def for_model(
        cls, model_config: Any, path: str, *, max_pixels: int, min_pixels: int
    ) -> ImageProcessing | None:
        """The processing for a supported vision-language model, or None for a text model."""
        if getattr(model_config, "model_type", None) not in GRID_VISION_MODELS:
            return None
        from transformers import AutoImageProcessor

        if not (Path(path) / "preprocessor_config.json").is_file():
            logger.warning("%s has no preprocessor_config.json; images will be refused", path)
            return None
        image_processor = AutoImageProcessor.from_pretrained(path)
        return cls(
            image_processor,
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

    def expand(self, prompt_ids: list[int], inputs: MediaInputs) -> list[int]:
        """``prompt_ids`` with each image placeholder repeated once per feature of its picture."""
        places = sum(1 for token in prompt_ids if token == self.image_token_id)
        if places != len(inputs.tokens_per_item):
            raise MediaInputError(
                f"the messages hold {len(inputs.tokens_per_item)} images but the prompt has {places} image "
                "placeholders (is the image token written in the text?)"
            )
        counts = iter(inputs.tokens_per_item)
        out: list[int] = []
        for token in prompt_ids:
            if token == self.image_token_id:
                out.extend([token] * next(counts))
            else:
                out.append(token)
        return out

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
