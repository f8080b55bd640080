"""The Train form's values and the YAML that ``lmforge train`` runs: one mapping, both ways.

The form holds a subset of lmforge's keys (LLaMA-Factory's names); what it writes is an
ordinary config file, so a run started here is exactly ``lmforge train that.yaml``.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lmforge.config import Config, FinetuningArguments, build_config
from lmforge.errors import ConfigError
from lmforge.webui import paths

# The form's fields in page order, with their defaults (the tiny-model example's values).
FORM_DEFAULTS: dict[str, Any] = {
    "model_name_or_path": "",
    "template": "auto",
    "trust_remote_code": False,
    "stage": "sft",
    "finetuning_type": "lora",
    "lora_rank": 8,
    "lora_alpha": 16,
    "lora_target": "all",
    "use_dora": False,
    "freeze_trainable_layers": 2,
    "dataset_dir": "data",
    "dataset": [],
    "learning_rate": 1e-4,
    "num_train_epochs": 3.0,
    "max_steps": 0,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 4,
    "cutoff_len": 1024,
    "packing": False,
    "bf16": False,
    "save_steps": 100,
    "logging_steps": 5,
    "output_dir": "saves/webui",
}
FORM_KEYS = tuple(FORM_DEFAULTS)
LORA_KEYS = ("lora_rank", "lora_alpha", "lora_target", "use_dora")
FREEZE_KEYS = ("freeze_trainable_layers",)
# Written into every run: a plot, and no reporting service the user did not ask for.
FIXED_VALUES: dict[str, Any] = {"do_train": True, "plot_loss": True, "report_to": "none"}


def stages() -> list[str]:
    """Every training stage lmforge supports, read from the config's type (new stages appear here)."""
    hint = typing.get_type_hints(FinetuningArguments)["stage"]
    return [str(stage) for stage in typing.get_args(hint)]


def finetuning_types() -> list[str]:
    hint = typing.get_type_hints(FinetuningArguments)["finetuning_type"]
    return [str(kind) for kind in typing.get_args(hint)]


def form_to_values(form: dict[str, Any]) -> dict[str, Any]:
    """The config mapping for the form: keys of the chosen method only, epochs or max_steps."""
    values: dict[str, Any] = {}
    kind = form["finetuning_type"]
    for key in FORM_KEYS:
        value = form.get(key, FORM_DEFAULTS[key])
        if key in LORA_KEYS and kind != "lora":
            continue
        if key in FREEZE_KEYS and kind != "freeze":
            continue
        if key == "trust_remote_code" and not value:
            continue
        if key == "max_steps" and not value:
            continue
        if key == "num_train_epochs" and form.get("max_steps"):
            continue
        if key == "dataset":
            value = ",".join(value or [])
        if isinstance(value, str):
            value = value.strip()
        if isinstance(value, float) and value.is_integer() and isinstance(FORM_DEFAULTS[key], int):
            value = int(value)  # gradio numbers arrive as floats
        values[key] = value
    values.update(FIXED_VALUES)
    return values


def values_to_form(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Form values from a loaded config, and the keys the form cannot show (kept out of the run)."""
    form = dict(FORM_DEFAULTS)
    ignored = []
    for key, value in values.items():
        if key in FORM_DEFAULTS:
            if key == "dataset":
                value = [v.strip() for v in str(value).split(",") if v.strip()] if value else []
            elif key == "lora_target" and isinstance(value, list):
                value = ",".join(value)
            form[key] = value
        elif key not in FIXED_VALUES:
            ignored.append(key)
    return form, ignored


def to_yaml(values: dict[str, Any]) -> str:
    return yaml.safe_dump(values, sort_keys=False, allow_unicode=True)


def read_config(path: str) -> dict[str, Any]:
    """A YAML/JSON config file as a mapping (safe loaders only)."""
    file = paths.config_file(path)
    text = file.read_text(encoding="utf-8")
    try:
        values = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {str(file)!r} is not valid: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {str(file)!r} must hold key: value pairs")
    return values


def dataset_names(dataset_dir: str) -> list[str]:
    """The dataset names in a folder's dataset_info.json."""
    info = paths.dataset_folder(dataset_dir) / "dataset_info.json"
    try:
        registry = json.loads(info.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{info}: not valid JSON ({exc})") from None
    if not isinstance(registry, dict):
        raise ConfigError(f"{info}: expected an object of dataset entries")
    return sorted(registry)


@dataclass
class CheckedRun:
    """A config that passed every check, and where its run writes."""

    values: dict[str, Any]
    config: Config
    output_dir: Path


def check_run(values: dict[str, Any]) -> CheckedRun:
    """Check paths and keys before anything starts; ConfigError names the field to fix."""
    paths.model_folder(str(values.get("model_name_or_path", "")))
    dataset_dir = str(values.get("dataset_dir", ""))
    known = dataset_names(dataset_dir)
    chosen = [name for name in str(values.get("dataset", "")).split(",") if name]
    if not chosen:
        raise ConfigError("dataset: pick at least one dataset")
    missing = [name for name in chosen if name not in known]
    if missing:
        raise ConfigError(f"dataset {missing[0]!r} is not in {dataset_dir}/dataset_info.json")
    output_dir = paths.output_folder(str(values.get("output_dir", "")))
    return CheckedRun(values, build_config(values), output_dir)
