"""Load a tokenizer and a model from ``ModelArguments``, turning load failures into one-line errors.

Training adapters (LoRA set-up, freezing) live in ``model/adapter.py``; here an inference
load applies ``adapter_name_or_path`` by merging each adapter into the base in order.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.config import hardware
from lmforge.config.finetuning import FinetuningArguments
from lmforge.config.model import ModelArguments
from lmforge.config.requirements import check_model_requirements
from lmforge.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import BitsAndBytesConfig, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

ATTENTION_IMPLEMENTATIONS = {"auto": None, "disabled": "eager", "sdpa": "sdpa", "fa2": "flash_attention_2"}


def model_path(model_args: ModelArguments) -> str:
    """The model folder (or hub id) to load; a clear error when it is missing."""
    path = model_args.model_name_or_path
    if not path:
        raise ConfigError("config key 'model_name_or_path' is required: a local model folder (or hub id)")
    return str(Path(path).expanduser()) if Path(path).expanduser().exists() else path


def _hub_kwargs(model_args: ModelArguments) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "trust_remote_code": model_args.trust_remote_code,
        "revision": model_args.model_revision,
    }
    if model_args.cache_dir:
        kwargs["cache_dir"] = model_args.cache_dir
    if model_args.hf_hub_token:
        kwargs["token"] = model_args.hf_hub_token
    return kwargs


def _load_error(what: str, path: str, exc: Exception) -> ConfigError:
    if not Path(path).exists():
        return ConfigError(
            f"cannot load the {what} from {path!r}: no such local folder, and it could not be fetched from the "
            f"Hugging Face hub ({type(exc).__name__}); set model_name_or_path to a local model folder"
        )
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConfigError(f"cannot load the {what} from {path!r}: {first_line}")


def load_tokenizer(model_args: ModelArguments, *, padding_side: str = "right") -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (the EOS token when the model has none)."""
    from transformers import AutoTokenizer

    path = model_path(model_args)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path,
            use_fast=model_args.use_fast_tokenizer,
            split_special_tokens=model_args.split_special_tokens,
            padding_side=padding_side,
            **_hub_kwargs(model_args),
        )
    except (OSError, ValueError) as exc:
        raise _load_error("tokenizer", path, exc) from None
    if model_args.new_special_tokens:
        added = tokenizer.add_tokens(list(model_args.new_special_tokens), special_tokens=True)
        if added:
            logger.info("added %d new special tokens; resize_vocab is needed to train them", added)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def inference_dtype_name(requested: str) -> str:
    """``infer_dtype`` as this machine runs it (config/hardware.py decides ``auto``); ``float16``
    on a CPU falls back to float32 with one warning, as ``fp16: true`` does in training."""
    choice = hardware.inference_dtype(requested)
    if choice.name != requested and requested != "auto":
        logger.warning(
            "infer_dtype: %s: %s; loading the weights in %s", requested, choice.reason, choice.name
        )
    elif requested == "auto":
        logger.info("infer_dtype auto: %s (%s)", choice.name, choice.reason)
    return choice.name


def resolve_dtype(name: str) -> torch.dtype:
    """``infer_dtype`` to the torch dtype the weights load in (see :func:`inference_dtype_name`)."""
    import torch

    dtype: torch.dtype = getattr(torch, inference_dtype_name(name))
    return dtype


def load_model(
    model_args: ModelArguments,
    finetuning_args: FinetuningArguments | None = None,
    *,
    trainable: bool,
    dtype: torch.dtype | None = None,
    num_labels: int | None = None,
) -> PreTrainedModel:
    """Load the base model; for inference also merge ``adapter_name_or_path`` into it.

    ``dtype`` overrides ``infer_dtype`` (training passes float32 or bfloat16 by its own rules).
    ``num_labels`` loads a sequence classifier instead (a reward model: ``num_labels=1``).
    """
    from transformers import AutoConfig

    path = model_path(model_args)
    check_model_requirements(model_args)
    try:
        config = AutoConfig.from_pretrained(path, **_hub_kwargs(model_args))
    except (OSError, ValueError) as exc:
        raise _load_error("model config", path, exc) from None
    kwargs: dict[str, Any] = {
        "config": config,
        "dtype": dtype if dtype is not None else resolve_dtype(model_args.infer_dtype),
        "low_cpu_mem_usage": model_args.low_cpu_mem_usage,
        **_hub_kwargs(model_args),
    }
    attention = ATTENTION_IMPLEMENTATIONS[model_args.flash_attn]
    if attention:
        kwargs["attn_implementation"] = attention
    if model_args.quantization_bit is not None:
        kwargs["quantization_config"] = _bnb_config(model_args)
    config = _omni_thinker(config, kwargs)
    auto_class = auto_model_class(config)
    if num_labels is not None:
        from transformers import AutoModelForSequenceClassification

        auto_class = AutoModelForSequenceClassification
        config.num_labels = num_labels
    if model_args.train_from_scratch:
        model = auto_class.from_config(config, dtype=kwargs["dtype"])
    else:
        try:
            model = auto_class.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as exc:
            raise _load_error("model", path, exc) from None
    if not trainable:
        model = merge_adapters(model, model_args.adapter_name_or_path or [])
        model.eval()
        model.requires_grad_(False)
    return model


def _omni_thinker(config: PretrainedConfig, kwargs: dict[str, Any]) -> PretrainedConfig:
    """A full Qwen2.5-Omni folder (thinker and talker) loads its thinker alone, the part lmforge trains
    and serves: the thinker's config, and its weights without their ``thinker.`` prefix."""
    if getattr(config, "model_type", None) != "qwen2_5_omni":
        return config
    logger.info(
        "Qwen2.5-Omni: loading its thinker (text from pictures, video and sound); the talker (speech "
        "output) is out of scope, and an export writes the thinker alone (it loads in plain transformers)"
    )
    thinker: PretrainedConfig = config.thinker_config
    kwargs["config"] = thinker
    kwargs["key_mapping"] = {r"^thinker\.": ""}
    return thinker


def auto_model_class(
    config: PretrainedConfig,
) -> Any:  # an Auto* class (transformers keeps their base private)
    """AutoModelForCausalLM, or the multimodal class for Qwen2-VL, Llama 3.2 Vision, Llama 4 (image-text) and Qwen2-Audio."""
    import transformers
    from transformers.models.auto import modeling_auto

    model_type = getattr(config, "model_type", None)
    image_text = model_type in modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    # Llama 3.2 Vision and Llama 4 are in the causal-LM mapping too, which would build their
    # text part alone; a config with a vision tower takes pictures, so the image-text class wins
    if image_text and getattr(config, "vision_config", None) is not None:
        return transformers.AutoModelForImageTextToText
    if model_type in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return transformers.AutoModelForCausalLM
    if image_text:
        return transformers.AutoModelForImageTextToText
    multimodal = getattr(modeling_auto, "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES", {})
    if model_type in multimodal and hasattr(transformers, "AutoModelForMultimodalLM"):
        return transformers.AutoModelForMultimodalLM
    return transformers.AutoModelForCausalLM


def merge_adapters(model: PreTrainedModel, adapters: list[str]) -> PreTrainedModel:
    """Apply each PEFT adapter in order and merge it into the weights (inference and export)."""
    if not adapters:
        return model
    from peft import PeftModel

    for adapter in adapters:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise ConfigError(
                f"adapter_name_or_path {adapter!r} is not a PEFT adapter folder (no adapter_config.json)"
            )
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        logger.info("merged adapter %s", adapter)
    return model


def _bnb_config(model_args: ModelArguments) -> BitsAndBytesConfig:
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise ConfigError("quantization_bit needs bitsandbytes: pip install 'lmforge[bnb]'") from None
    import torch

    if model_args.quantization_bit == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16,
        bnb_4bit_use_double_quant=model_args.double_quantization,
        bnb_4bit_quant_type=model_args.quantization_type,
    )
