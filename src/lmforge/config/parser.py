"""Read ``cfg.yaml key=value --key value`` into typed, validated settings.

Keys and meanings follow LLaMA-Factory, so a LLaMA-Factory YAML works unchanged. An unknown
key stops the run with a did-you-mean; a LLaMA-Factory key we do not implement says so by
name; a value of the wrong type names the key, the value and the expected type.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lmforge.config.coerce import coerce_value
from lmforge.config.data import DataArguments
from lmforge.config.evaluation import EvaluationArguments
from lmforge.config.finetuning import FinetuningArguments
from lmforge.config.generating import GeneratingArguments
from lmforge.config.legacy_training_keys import LEGACY_TRAINING_KEYS
from lmforge.config.llamafactory_keys import NO_DEFAULT, UNSUPPORTED_LLAMAFACTORY_KEYS, UNSUPPORTED_REASONS
from lmforge.config.model import ModelArguments
from lmforge.config.requirements import check_training_requirements
from lmforge.config.serving import ServingArguments
from lmforge.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments

logger = logging.getLogger(__name__)

CONCERNS: dict[str, type] = {
    "model": ModelArguments,
    "data": DataArguments,
    "finetuning": FinetuningArguments,
    "generating": GeneratingArguments,
    "serving": ServingArguments,
    "evaluation": EvaluationArguments,  # lmforge eval (issue 17)
}
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
LLAMAFACTORY_ONLY_STAGES = ("ppo",)


@dataclass
class Config:
    """All settings of one run, grouped by concern."""

    model: ModelArguments = field(default_factory=ModelArguments)
    data: DataArguments = field(default_factory=DataArguments)
    finetuning: FinetuningArguments = field(default_factory=FinetuningArguments)
    generating: GeneratingArguments = field(default_factory=GeneratingArguments)
    serving: ServingArguments = field(default_factory=ServingArguments)
    evaluation: EvaluationArguments = field(default_factory=EvaluationArguments)  # lmforge eval
    training_kwargs: dict[str, Any] = field(default_factory=dict)
    """Typed values for transformers' Seq2SeqTrainingArguments, as the user gave them."""
    source: Path | None = None

    def training_arguments(self) -> Seq2SeqTrainingArguments:
        """Build transformers' training arguments (imports transformers; train only)."""
        from transformers import Seq2SeqTrainingArguments

        check_training_requirements(self)  # a missing optional package: one line, not transformers' traceback
        kwargs = dict(self.training_kwargs)
        _fall_back_from_half_precision(kwargs)
        try:
            return Seq2SeqTrainingArguments(**kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"training settings: {exc}") from None


def _fall_back_from_half_precision(kwargs: dict[str, Any]) -> None:
    """``bf16``/``fp16`` on a machine without a GPU: keep bf16 where the CPU computes it natively,
    otherwise warn and train in fp32 instead of crashing.

    A tutorial config written for a GPU should still run on a laptop; fp32 gives the same
    result, only slower. docs/design.md records this choice.
    """
    import torch

    from lmforge.config.hardware import cpu_bf16_support

    if torch.cuda.is_available():
        return
    if kwargs.get("fp16"):
        logger.warning("fp16: true needs a GPU (CPUs have no fast fp16 training); training runs in fp32")
        kwargs["fp16"] = False
    if kwargs.get("bf16"):
        support = cpu_bf16_support()
        if support.native:
            logger.info("bf16: mixed precision on the CPU (%s)", support.detail)
        else:
            logger.warning(
                "bf16: true needs a GPU or a CPU with native bf16; %s: training runs in fp32", support.detail
            )
            kwargs["bf16"] = False


def parse_cli(argv: list[str]) -> tuple[Path | None, dict[str, str]]:
    """Split ``[cfg.yaml] key=value --key value --key=value --flag`` into a path and overrides."""
    path: Path | None = None
    overrides: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            body = arg[2:]
            if "=" in body:
                key, value = body.split("=", 1)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                key, value = body, argv[i + 1]
                i += 1
            else:
                key, value = body, "true"
            overrides[key.replace("-", "_")] = value
        elif "=" in arg:
            key, value = arg.split("=", 1)
            overrides[key.strip()] = value
        elif path is None and arg.lower().endswith(CONFIG_SUFFIXES):
            path = Path(arg)
        else:
            raise ConfigError(
                f"cannot read argument {arg!r}: give a config file (.yaml/.yml/.json), key=value or --key value"
            )
        i += 1
    return path, overrides


def read_config_file(path: Path) -> dict[str, Any]:
    """Load a YAML or JSON mapping; errors name the file and the position."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text) if text.strip() else {}
        else:
            data = yaml.safe_load(text) or {}
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of key: value, not {type(data).__name__}")
    return data


def load_config(argv: list[str]) -> Config:
    """Parse a command's arguments (config file plus overrides) into a :class:`Config`."""
    path, overrides = parse_cli(argv)
    values: dict[str, Any] = read_config_file(path) if path else {}
    values.update(overrides)
    config = build_config(values)
    config.source = path
    return config


def build_config(values: dict[str, Any]) -> Config:
    """Validate and type a flat mapping of settings."""
    owners = key_owners()
    training_types = _training_field_types()
    grouped: dict[str, dict[str, Any]] = {name: {} for name in CONCERNS}
    training_kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        if not isinstance(key, str):
            raise ConfigError(f"config key {key!r} must be a string")
        if key == "stage" and raw in LLAMAFACTORY_ONLY_STAGES:
            raise ConfigError(
                f"stage '{raw}' is a LLaMA-Factory stage lmforge does not support yet (use sft, pt, dpo, kto or rm)"
            )
        if key in owners:
            concern = owners[key]
            grouped[concern][key] = coerce_value(key, raw, _field_types(CONCERNS[concern])[key])
        elif key in training_types:
            training_kwargs[key] = coerce_value(key, raw, training_types[key])
        elif key in LEGACY_TRAINING_KEYS:
            for new_key, new_value in LEGACY_TRAINING_KEYS[key](raw).items():
                if new_key in values:
                    raise ConfigError(f"config keys '{key}' and '{new_key}' set the same thing; keep one")
                training_kwargs[new_key] = new_value
        elif key in UNSUPPORTED_LLAMAFACTORY_KEYS:
            default = UNSUPPORTED_LLAMAFACTORY_KEYS[key]
            if default is not NO_DEFAULT and raw == default:
                logger.debug("ignoring %s=%r (LLaMA-Factory's default; the option is off)", key, raw)
                continue
            raise ConfigError(
                UNSUPPORTED_REASONS.get(key)
                or f"'{key}' is a LLaMA-Factory option lmforge does not support yet; remove it"
            )
        else:
            raise ConfigError(_unknown_key_message(key))
    config = Config(
        **{name: CONCERNS[name](**grouped[name]) for name in CONCERNS},
        training_kwargs=training_kwargs,
    )
    _check_combinations(config)
    return config


def all_keys() -> set[str]:
    """Every key a config may set."""
    return set(key_owners()) | set(_training_field_types()) | set(LEGACY_TRAINING_KEYS)


@cache
def key_owners() -> dict[str, str]:
    """Map each lmforge key to its concern's name."""
    owners: dict[str, str] = {}
    for name, cls in CONCERNS.items():
        for f in dataclasses.fields(cls):
            owners[f.name] = name
    return owners


@cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls) if f.init}


@cache
def _training_field_types() -> dict[str, Any]:
    from transformers import Seq2SeqTrainingArguments

    try:
        hints = typing.get_type_hints(Seq2SeqTrainingArguments)
    except Exception:  # a forward reference transformers never resolves: fall back per field
        hints = {}
    return {
        f.name: hints.get(f.name, f.type if not isinstance(f.type, str) else Any)
        for f in dataclasses.fields(Seq2SeqTrainingArguments)
        if f.init and not f.name.startswith("_")
    }


def _unknown_key_message(key: str) -> str:
    hint = did_you_mean(key, all_keys()) or " (see `lmforge train --help` for the keys)"
    return f"unknown config key '{key}'{hint}"


def _check_combinations(config: Config) -> None:
    data = config.data
    if data.val_size < 0:
        raise ConfigError("config key 'val_size' must be >= 0 (a fraction below 1, or a sample count)")
    if data.val_size >= 1 and not float(data.val_size).is_integer():
        raise ConfigError("config key 'val_size' must be a fraction below 1 or a whole number of samples")
    if data.cutoff_len <= 0:
        raise ConfigError("config key 'cutoff_len' must be a positive number of tokens")
    if data.max_samples is not None and data.max_samples <= 0:
        raise ConfigError("config key 'max_samples' must be a positive number of samples")
    if data.interleave_probs is not None and data.mix_strategy == "concat":
        raise ConfigError(
            "config key 'interleave_probs' needs mix_strategy interleave_under or interleave_over"
        )
    if data.neat_packing and data.packing is False:
        raise ConfigError("config key 'neat_packing' needs packing; remove 'packing: false'")
    quant = config.model.quantization_bit
    if quant is not None and quant not in (4, 8):
        raise ConfigError(f"config key 'quantization_bit' must be 4 or 8, got {quant}")
    if config.finetuning.finetuning_type != "lora" and quant is not None:
        raise ConfigError("config key 'quantization_bit' needs finetuning_type: lora (QLoRA)")
