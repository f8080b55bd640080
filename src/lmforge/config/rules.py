"""The rules between config keys, each stated once and checked when the config is loaded.

A rule reads the typed settings and returns the one line that names the keys and what to do,
or None. Rules that hold for every command run in :func:`check_rules` (``build_config``);
the few that only training needs (a stream needs ``max_steps``) run in
:func:`check_training_rules`, before transformers' arguments are built. The packages and GPU
a key needs are checked in :mod:`lmforge.config.requirements`, not here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from lmforge.config.data import DataArguments
from lmforge.config.finetuning import FinetuningArguments
from lmforge.config.model import ModelArguments
from lmforge.errors import ConfigError

PREFERENCE_STAGES = ("dpo", "kto", "rm")


class Settings(Protocol):
    """What the rules read of a :class:`~lmforge.config.settings.Config` (kept apart so the
    config dataclass can run the training rules without a cycle)."""

    model: ModelArguments
    data: DataArguments
    finetuning: FinetuningArguments
    training_kwargs: dict[str, Any]


Rule = Callable[[Settings], str | None]


def check_rules(settings: Settings) -> None:
    """Raise ConfigError with the first rule the settings break."""
    _raise_first(settings, RULES)


def check_training_rules(settings: Settings) -> None:
    """The rules only a training run needs (other commands may read such a config)."""
    _raise_first(settings, TRAINING_RULES)


def _raise_first(settings: Settings, rules: tuple[Rule, ...]) -> None:
    for rule in rules:
        message = rule(settings)
        if message:
            raise ConfigError(message)


# --- single keys whose range the type cannot say ------------------------------------------


def _val_size_range(s: Settings) -> str | None:
    size = s.data.val_size
    if size < 0:
        return "config key 'val_size' must be >= 0 (a fraction below 1, or a sample count)"
    if size >= 1 and not float(size).is_integer():
        return "config key 'val_size' must be a fraction below 1 or a whole number of samples"
    return None


def _cutoff_len_positive(s: Settings) -> str | None:
    if s.data.cutoff_len <= 0:
        return "config key 'cutoff_len' must be a positive number of tokens"
    return None


def _max_samples_positive(s: Settings) -> str | None:
    if s.data.max_samples is not None and s.data.max_samples <= 0:
        return "config key 'max_samples' must be a positive number of samples"
    return None


def _quantization_bits(s: Settings) -> str | None:
    for key, bits in (
        ("quantization_bit", s.model.quantization_bit),
        ("ref_model_quantization_bit", s.finetuning.ref_model_quantization_bit),
    ):
        if bits is not None and bits not in (4, 8):
            return f"config key '{key}' must be 4 or 8, got {bits}"
    return None


def _label_smoothing_range(s: Settings) -> str | None:
    smoothing = s.finetuning.dpo_label_smoothing
    if not 0 <= smoothing < 0.5:
        return f"config key 'dpo_label_smoothing' must be in [0, 0.5), got {smoothing}"
    return None


# --- data ----------------------------------------------------------------------------------


def _prompt_masking(s: Settings) -> str | None:
    if s.data.train_on_prompt and s.data.mask_history:
        return "config keys 'train_on_prompt' and 'mask_history' cannot both be true; keep one"
    return None


def _eval_set_choice(s: Settings) -> str | None:
    if s.data.eval_dataset and s.data.val_size:
        return "config keys 'val_size' and 'eval_dataset' both choose the eval set; keep one"
    return None


def _interleave_probs(s: Settings) -> str | None:
    data = s.data
    probs = data.interleave_probs
    if probs is None:
        return None
    if data.mix_strategy == "concat":
        return "config key 'interleave_probs' needs mix_strategy interleave_under or interleave_over"
    if data.dataset and len(data.dataset) > 1 and len(probs) != len(data.dataset):
        return (
            f"config keys 'interleave_probs' and 'dataset': {len(probs)} probabilities for "
            f"{len(data.dataset)} datasets; give one per dataset"
        )
    if not math.isclose(sum(probs), 1.0, rel_tol=1e-6):
        return f"config key 'interleave_probs' must sum to 1, got {sum(probs):g}"
    return None


def _neat_packing_needs_packing(s: Settings) -> str | None:
    if s.data.neat_packing and s.data.packing is False:
        return "config key 'neat_packing' needs packing; remove 'packing: false'"
    return None


def _streaming(s: Settings) -> str | None:
    data = s.data
    if not data.streaming:
        return None
    if data.packing or data.neat_packing:
        key = "neat_packing" if data.neat_packing else "packing"
        return (
            f"config keys 'streaming' and '{key}': packing needs the whole dataset at once; "
            "set packing: false with streaming: true"
        )
    if data.val_size and data.val_size < 1:
        return (
            "config keys 'streaming' and 'val_size': with streaming, val_size must be a sample count "
            "(a whole number), not a fraction"
        )
    return None


def _preference_data(s: Settings) -> str | None:
    stage = s.finetuning.stage
    if stage not in PREFERENCE_STAGES:
        return None
    if s.data.streaming:
        return f"config keys 'stage' and 'streaming': streaming: true is not supported with stage '{stage}' yet; set streaming: false"
    if s.data.packing or s.data.neat_packing:
        return (
            f"config keys 'stage' and 'packing': packing is not supported with stage '{stage}' "
            "(each pair is padded as its own row); set packing: false"
        )
    return None


# --- adapters and finetuning types ---------------------------------------------------------


def _adapter_needs_lora(s: Settings) -> str | None:
    if s.model.adapter_name_or_path and s.finetuning.finetuning_type != "lora":
        return "config key 'adapter_name_or_path' needs finetuning_type: lora (it continues a LoRA adapter)"
    return None


def _qlora_needs_lora(s: Settings) -> str | None:
    if s.model.quantization_bit is not None and s.finetuning.finetuning_type != "lora":
        return "config key 'quantization_bit' needs finetuning_type: lora (QLoRA)"
    return None


def _llama_pro_needs_freeze(s: Settings) -> str | None:
    if s.finetuning.use_llama_pro and s.finetuning.finetuning_type != "freeze":
        return "config key 'use_llama_pro' needs finetuning_type: freeze (it trains the expanded blocks)"
    return None


def _pissa(s: Settings) -> str | None:
    finetuning = s.finetuning
    if finetuning.pissa_convert and not finetuning.pissa_init:
        return "config key 'pissa_convert' needs pissa_init: true"
    if finetuning.pissa_init and finetuning.use_dora:
        return "config keys 'pissa_init' and 'use_dora' do not combine; keep one"
    return None


def _ref_model_adapters(s: Settings) -> str | None:
    if s.finetuning.ref_model_adapters and not s.finetuning.ref_model:
        return "config key 'ref_model_adapters' needs ref_model (the model they belong to)"
    return None


# --- optimizers ----------------------------------------------------------------------------


def _optimizer_choice(s: Settings) -> str | None:
    """At most one optimizer option, each with the finetuning type it works with."""
    finetuning = s.finetuning
    chosen = [
        key
        for key, on in (
            ("use_galore", finetuning.use_galore),
            ("use_apollo", finetuning.use_apollo),
            ("use_badam", finetuning.use_badam),
            ("use_adam_mini", finetuning.use_adam_mini),
            ("loraplus_lr_ratio", finetuning.loraplus_lr_ratio is not None),
        )
        if on
    ]
    if len(chosen) > 1:
        return f"config keys {' and '.join(repr(k) for k in chosen)} each choose the optimizer; keep one"
    if not chosen:
        return None
    key = chosen[0]
    if key == "loraplus_lr_ratio" and finetuning.finetuning_type != "lora":
        return "config key 'loraplus_lr_ratio' needs finetuning_type: lora"
    if key in ("use_galore", "use_apollo", "use_badam") and finetuning.finetuning_type == "lora":
        return f"config key '{key}' trains full weights; use finetuning_type: full or freeze, not lora"
    if key in ("use_galore", "use_apollo") and "optim" in s.training_kwargs:
        return f"config keys '{key}' and 'optim' both choose the optimizer; keep one"
    if key == "use_badam" and finetuning.badam_mode == "ratio":
        return (
            "config key 'badam_mode: ratio' makes sparse gradients, whose norm transformers' Trainer cannot "
            "take (it logs grad_norm every step); use badam_mode: layer"
        )
    layerwise = (key == "use_galore" and finetuning.galore_layerwise) or (
        key == "use_apollo" and finetuning.apollo_layerwise
    )
    if layerwise and _number(s.training_kwargs, "gradient_accumulation_steps", 1) != 1:
        return (
            f"config keys '{key.replace('use_', '')}_layerwise' and 'gradient_accumulation_steps': the layerwise "
            "optimizer updates each layer during the backward pass, so set gradient_accumulation_steps: 1"
        )
    return None


# --- training only -------------------------------------------------------------------------


def _stream_needs_max_steps(s: Settings) -> str | None:
    if s.data.streaming and _number(s.training_kwargs, "max_steps", -1) <= 0:
        return (
            "config keys 'streaming' and 'max_steps': streaming: true needs max_steps "
            "(a stream has no length to count epochs by)"
        )
    return None


def _number(kwargs: Mapping[str, object], key: str, default: int) -> float:
    value = kwargs.get(key)
    return value if isinstance(value, int | float) else default


RULES: tuple[Rule, ...] = (
    _val_size_range,
    _cutoff_len_positive,
    _max_samples_positive,
    _quantization_bits,
    _label_smoothing_range,
    _prompt_masking,
    _eval_set_choice,
    _interleave_probs,
    _neat_packing_needs_packing,
    _streaming,
    _preference_data,
    _adapter_needs_lora,
    _qlora_needs_lora,
    _llama_pro_needs_freeze,
    _pissa,
    _ref_model_adapters,
    _optimizer_choice,
)
TRAINING_RULES: tuple[Rule, ...] = (_stream_needs_max_steps,)
