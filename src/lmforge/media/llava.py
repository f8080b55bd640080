"""Pictures for LLaVA-1.5: a CLIP image processor and a fixed number of image tokens per picture.

LLaVA resizes and centre-crops every picture to the vision tower's square input, so each
``<image>`` stands for the same number of tokens: one per patch of the crop, plus the tokens
the tower adds (CLIP's class token), less that class token when the model selects patch
features only (``vision_feature_select_strategy: default``). The numbers come from the
processor's own ``processor_config.json`` where the checkpoint has one (what ``LlavaProcessor``
counts with), else from the model config. Pictures are decoded and bounded by
``image_max_pixels`` / ``image_min_pixels`` as for Qwen2-VL (``media/vision.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.media.inputs import MediaInputError, MediaInputs
from lmforge.media.vision import VisionProcessing

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from lmforge.config.model import ModelArguments

# The processor settings that decide the token count, as LlavaProcessor reads them.
COUNT_KEYS = ("patch_size", "num_additional_image_tokens", "vision_feature_select_strategy")


class LlavaProcessing(VisionProcessing):
    """LLaVA-1.5: pictures only; ``pixel_values`` (n, 3, h, w) and a fixed token count per picture."""

    mrope = False

    def __init__(
        self,
        image_processor: Any,
        *,
        image_token_id: int,
        patch_size: int,
        extra_tokens: int,
        max_pixels: int = 768 * 768,
        min_pixels: int = 32 * 32,
    ) -> None:
        super().__init__(
            image_processor, image_token_id=image_token_id, max_pixels=max_pixels, min_pixels=min_pixels
        )
        self.patch_size = patch_size
        self.extra_tokens = extra_tokens  # tokens beside the patches' (CLS kept: +1; dropped: 0)

    @classmethod
    def for_model(
        cls, model_config: PretrainedConfig, path: str, model_args: ModelArguments
    ) -> LlavaProcessing:
        from transformers import AutoImageProcessor

        counts = _processor_counts(Path(path))
        vision = model_config.vision_config
        strategy = counts.get("vision_feature_select_strategy") or getattr(
            model_config, "vision_feature_select_strategy", "default"
        )
        added = counts.get("num_additional_image_tokens")
        added = 1 if added is None else int(added)  # CLIP's class token
        return cls(
            AutoImageProcessor.from_pretrained(path),  # CLIPImageProcessorPil when torchvision is absent
            image_token_id=int(model_config.image_token_id),
            patch_size=int(counts.get("patch_size") or vision.patch_size),
            extra_tokens=added - (1 if strategy == "default" else 0),
            max_pixels=model_args.image_max_pixels,
            min_pixels=model_args.image_min_pixels,
        )

    def _process(self, blobs: list[bytes], where: list[str], kinds: list[str]) -> MediaInputs:
        if not blobs:
            return MediaInputs()
        pictures = [self._decode(data, name) for data, name in zip(blobs, where, strict=True)]
        try:
            out = self.image_processor(images=pictures, return_tensors="pt")
        except ValueError as exc:
            raise MediaInputError(f"{where[0]}: the image cannot be processed ({exc})") from None
        pixels = out["pixel_values"]
        height, width = pixels.shape[-2:]
        count = (height // self.patch_size) * (width // self.patch_size) + self.extra_tokens
        token = self.placeholders["image"]
        # decoded: the bounded pictures, for an engine that runs the processor itself (vLLM)
        return MediaInputs({"pixel_values": pixels}, [(token, int(count))] * len(pictures), decoded=pictures)


def _processor_counts(folder: Path) -> dict[str, Any]:
    """The token-count settings of the checkpoint's ``processor_config.json`` (empty without one)."""
    try:
        settings = json.loads((folder / "processor_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {key: settings[key] for key in COUNT_KEYS if isinstance(settings, dict) and key in settings}
