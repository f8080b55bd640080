"""Training keys our users know from transformers 4 that transformers 5 renamed or dropped.

LLaMA-Factory configs are written against transformers 4 (``warmup_ratio``,
``evaluation_strategy``, ``group_by_length``...). Each is translated to its transformers 5
equivalent here, so such a config keeps its meaning; keys with no equivalent stop the run.
"""

from __future__ import annotations

from collections.abc import Callable

from lmforge.config.coerce import coerce_value
from lmforge.errors import ConfigError


def _warmup_ratio(value: object) -> dict[str, object]:
    ratio = coerce_value("warmup_ratio", value, float)
    if not 0 <= ratio < 1:
        raise ConfigError(f"config key 'warmup_ratio': {ratio} must be in [0, 1)")
    return {"warmup_steps": ratio}  # transformers 5 reads a float below 1 as a ratio


def _group_by_length(value: object) -> dict[str, object]:
    return (
        {"train_sampling_strategy": "group_by_length"} if coerce_value("group_by_length", value, bool) else {}
    )


def _no_cuda(value: object) -> dict[str, object]:
    return {"use_cpu": coerce_value("no_cuda", value, bool)}


def _evaluation_strategy(value: object) -> dict[str, object]:
    return {"eval_strategy": coerce_value("evaluation_strategy", value, str)}


def _save_safetensors(value: object) -> dict[str, object]:
    if not coerce_value("save_safetensors", value, bool):
        raise ConfigError(
            "config key 'save_safetensors: false' is not supported: lmforge always saves safetensors"
        )
    return {}


def _enable_liger_kernel(value: object) -> dict[str, object]:
    """LLaMA-Factory's name for transformers' ``use_liger_kernel`` (issue 18)."""
    return {"use_liger_kernel": coerce_value("enable_liger_kernel", value, bool)}


def _ignored(key: str) -> Callable[[object], dict[str, object]]:
    def translate(value: object) -> dict[str, object]:
        coerce_value(key, value, bool)
        return {}

    return translate


LEGACY_TRAINING_KEYS: dict[str, Callable[[object], dict[str, object]]] = {
    "warmup_ratio": _warmup_ratio,
    "group_by_length": _group_by_length,
    "no_cuda": _no_cuda,
    "evaluation_strategy": _evaluation_strategy,
    "save_safetensors": _save_safetensors,
    "enable_liger_kernel": _enable_liger_kernel,
    # lmforge always reports trained tokens/s in all_results.json
    "include_tokens_per_second": _ignored("include_tokens_per_second"),
}
