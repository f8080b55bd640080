"""Qwen2.5-Omni's official processor around the tiny model's tokenizer, image processor and feature
extractor: the reference our encoding is compared with (tests/media, tests/train).

Its video processor needs torchvision, which cannot be installed beside this CPU torch; the
reference gets a stand-in that hands back our video patches and grid, so the official code still
lays out the tokens (with ``use_audio_in_video`` too) and the features of pictures and sound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

OMNI_TOKENS = {
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "audio_token": "<|AUDIO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}


class OurVideoPatches:
    """Stands in for Qwen2VLVideoProcessor (torchvision only): ``videos`` is our (grid, patches)."""

    merge_size = 2
    temporal_patch_size = 2

    def __call__(self, videos: Any = None, **_: Any) -> dict[str, Any]:
        grid, patches = videos
        return {"pixel_values_videos": patches, "video_grid_thw": grid}


def official_processor(path: Path) -> Any:
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer, Qwen2_5OmniProcessor

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    for name, token in OMNI_TOKENS.items():
        setattr(tokenizer, name, token)

    class Reference(Qwen2_5OmniProcessor):
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> None:
            return None  # the stand-in video processor is not a transformers class

    return Reference(
        image_processor=AutoImageProcessor.from_pretrained(str(path)),
        video_processor=OurVideoPatches(),
        feature_extractor=AutoFeatureExtractor.from_pretrained(str(path)),
        tokenizer=tokenizer,
    )
