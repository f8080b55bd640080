"""Read ``cfg.yaml key=value --key value`` into typed, validated settings.

Keys and meanings follow LLaMA-Factory, so a LLaMA-Factory YAML works unchanged. An unknown
key stops the run with a did-you-mean; a LLaMA-Factory key we do not implement says so by
name; a value of the wrong type names the key, the value and the expected type.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import yaml

from lmforge.config.coerce import coerce_value
from lmforge.config.environment import use_ray
from lmforge.config.keys import all_keys, field_types, key_owners, training_field_types
from lmforge.config.legacy_training_keys import LEGACY_TRAINING_KEYS
from lmforge.config.llamafactory_keys import NO_DEFAULT, UNSUPPORTED_LLAMAFACTORY_KEYS, UNSUPPORTED_REASONS
from lmforge.config.rules import check_rules
from lmforge.config.settings import CONCERNS, Config
from lmforge.errors import ConfigError, did_you_mean

logger = logging.getLogger(__name__)

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
LLAMAFACTORY_ONLY_STAGES = ("ppo",)
__all__ = ["Config", "all_keys", "build_config", "key_owners", "load_config", "parse_cli", "read_config_file"]


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


def read_config_file(path: Path) -> dict[str, object]:
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
    values: dict[str, object] = read_config_file(path) if path else {}
    values.update(overrides)
    config = build_config(values)
    config.source = path
    return config


def build_config(values: Mapping[str, object]) -> Config:
    """Validate and type a flat mapping of settings, then check the rules between its keys."""
    owners = key_owners()
    training_types = training_field_types()
    grouped: dict[str, dict[str, object]] = {name: {} for name in CONCERNS}
    training_kwargs: dict[str, object] = {}
    # the stage first: a PPO config's reward_model keys would otherwise be what the message names
    if values.get("stage") in LLAMAFACTORY_ONLY_STAGES:
        raise ConfigError(
            f"stage '{values['stage']}' is a LLaMA-Factory stage lmforge does not support yet "
            "(use sft, pt, dpo, kto or rm)"
        )
    for key, raw in values.items():
        if not isinstance(key, str):
            raise ConfigError(f"config key {key!r} must be a string")
        if key in owners:
            concern = owners[key]
            grouped[concern][key] = coerce_value(key, raw, field_types(CONCERNS[concern])[key])
        elif key in training_types:
            training_kwargs[key] = coerce_value(key, raw, training_types[key])
        elif key in LEGACY_TRAINING_KEYS:
            for new_key, new_value in LEGACY_TRAINING_KEYS[key](raw).items():
                if new_key in values:
                    raise ConfigError(f"config keys '{key}' and '{new_key}' set the same thing; keep one")
                training_kwargs[new_key] = new_value
        elif key in UNSUPPORTED_LLAMAFACTORY_KEYS:
            if _is_llamafactory_default(key, raw):
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
        ray_keys=tuple(grouped["ray"]),
        uses_ray=bool(grouped["ray"]) or use_ray(),
    )
    check_rules(config)
    return config


def _is_llamafactory_default(key: str, raw: object) -> bool:
    """``raw`` (a YAML value or a command-line string) equals LLaMA-Factory's default for ``key``."""
    default = UNSUPPORTED_LLAMAFACTORY_KEYS[key]
    if default is NO_DEFAULT:
        return False
    if raw == default:
        return True
    try:
        return bool(coerce_value(key, raw, type(default)) == default)
    except ConfigError:
        return False


def _unknown_key_message(key: str) -> str:
    hint = did_you_mean(key, all_keys()) or " (see `lmforge train --help keys` for the keys)"
    return f"unknown config key '{key}'{hint}"
