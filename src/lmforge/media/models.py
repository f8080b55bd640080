"""Which multimodal models lmforge prepares media for, and the processing each one gets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from lmforge.media.audio import AudioProcessing
from lmforge.media.inputs import MediaProcessing
from lmforge.media.omni import OMNI_MODELS, OmniProcessing
from lmforge.media.vision import VisionProcessing

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from lmforge.config.model import ModelArguments

logger = logging.getLogger(__name__)

# Model types whose image and video features fill repeated placeholder tokens and whose
# processor reports a (t, h, w) grid per item; their tokens count grid.prod() / merge_size**2.
GRID_VISION_MODELS = {"qwen2_vl", "qwen2_5_vl"}
# Model types whose audio encoder reads Whisper log-mel features of up to 30 s.
WHISPER_AUDIO_MODELS = {"qwen2_audio"}


def media_processing_for(
    model_config: PretrainedConfig, path: str, model_args: ModelArguments
) -> MediaProcessing | None:
    """The media processing of a supported multimodal model folder; None for a text model."""
    model_type = getattr(model_config, "model_type", None)
    if model_type not in GRID_VISION_MODELS | WHISPER_AUDIO_MODELS | OMNI_MODELS:
        return None
    if not (Path(path) / "preprocessor_config.json").is_file():
        logger.warning("%s has no preprocessor_config.json; media will be refused", path)
        return None
    if model_type in OMNI_MODELS:
        return OmniProcessing.for_model(model_config, path, model_args)
    if model_type in WHISPER_AUDIO_MODELS:
        return AudioProcessing.for_model(model_config, path)
    return VisionProcessing.for_model(model_config, path, model_args)
