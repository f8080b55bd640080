"""Which multimodal models lmforge prepares media for, and the processing each one gets.

One row per model type: the :class:`MediaProcessing` subclass that counts its placeholders and
builds its tensors. The families differ in how a picture reaches the language model:

- grid (Qwen2-VL, Qwen2.5-VL): one placeholder repeated ``grid.prod() / merge_size**2`` times;
- fixed (LLaVA-1.5): every picture cropped to one square, a fixed number of image tokens;
- tiled (Llama 4): tiles plus a global view, each placeholder a structured token run;
- cross-attention (Llama 3.2 Vision): one ``<|image|>`` token, features read by cross-attention;
- Whisper audio (Qwen2-Audio): log-mel features of up to 30 s;
- omni (Qwen2.5-Omni's thinker): grid pictures and video and Whisper sound in one prompt.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from lmforge.media.audio import AudioProcessing
from lmforge.media.inputs import MediaProcessing
from lmforge.media.llama4 import Llama4Processing
from lmforge.media.llava import LlavaProcessing
from lmforge.media.mllama import MllamaProcessing
from lmforge.media.omni import OMNI_MODELS, OmniProcessing
from lmforge.media.vision import VisionProcessing

if TYPE_CHECKING:
    from collections.abc import Callable

    from transformers import PretrainedConfig

    from lmforge.config.model import ModelArguments

logger = logging.getLogger(__name__)


def _audio(model_config: PretrainedConfig, path: str, model_args: ModelArguments) -> MediaProcessing:
    return AudioProcessing.for_model(model_config, path)


def _llama4(model_config: PretrainedConfig, path: str, model_args: ModelArguments) -> MediaProcessing:
    # its image processor needs torchvision, so the saved settings are read without it
    settings = json.loads((Path(path) / "preprocessor_config.json").read_text(encoding="utf-8"))
    return Llama4Processing.for_model(model_config, path, model_args, settings)


#: model_type -> how its processing is built from (model config, folder, model arguments)
PROCESSING: dict[str, Callable[[PretrainedConfig, str, ModelArguments], MediaProcessing]] = {
    "qwen2_vl": VisionProcessing.for_model,
    "qwen2_5_vl": VisionProcessing.for_model,
    "llava": LlavaProcessing.for_model,
    "mllama": MllamaProcessing.for_model,
    "llama4": _llama4,
    "qwen2_audio": _audio,
    **dict.fromkeys(OMNI_MODELS, OmniProcessing.for_model),
}
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def media_processing_for(
    model_config: PretrainedConfig, path: str, model_args: ModelArguments
) -> MediaProcessing | None:
    """The media processing of a supported multimodal model folder; None for a text model."""
    build = PROCESSING.get(getattr(model_config, "model_type", None) or "")
    if build is None:
        return None
    if not any((Path(path) / name).is_file() for name in PROCESSOR_FILES):
        logger.warning("%s has no preprocessor_config.json; media will be refused", path)
        return None
    return build(model_config, path, model_args)
