"""Every key a config may set: its group, type, default and help, read from the dataclass fields.

The parser asks here which concern owns a key and what type it takes; ``lmforge train --help
keys`` prints the same catalog, so the help a user reads is the schema the parser applies.
"""

from __future__ import annotations

import dataclasses
import textwrap
import typing
from dataclasses import dataclass
from functools import cache

from lmforge.config.coerce import describe_type
from lmforge.config.legacy_training_keys import LEGACY_TRAINING_KEYS
from lmforge.config.llamafactory_keys import NO_DEFAULT, UNSUPPORTED_LLAMAFACTORY_KEYS
from lmforge.config.settings import CONCERNS

TRAINING_GROUP = "training"
GROUP_SUMMARIES = {
    "model": "the base model, tokenizer, quantization, media processors and export",
    "data": "datasets, their mixing, encoding and packing",
    "finetuning": "the training stage, adapters, optimizers and preference losses",
    "generating": "generation defaults for chat, serving and predictions",
    "serving": "the inference backend and the API server",
    "evaluation": "`lmforge eval` multiple-choice benchmarks",
    "ray": "training through Ray Train on a local Ray cluster (`lmforge[ray]`)",
    TRAINING_GROUP: "transformers' Seq2SeqTrainingArguments (help text is transformers' own)",
}


@dataclass(frozen=True)
class KeyHelp:
    name: str
    group: str
    kind: str  # 'an integer', 'one of: lora, freeze, full', ...
    default: str
    help: str


@cache
def key_owners() -> dict[str, str]:
    """Map each lmforge key to its concern's name."""
    return {f.name: name for name, cls in CONCERNS.items() for f in dataclasses.fields(cls)}


def all_keys() -> set[str]:
    """Every key a config may set."""
    return set(key_owners()) | set(training_field_types()) | set(LEGACY_TRAINING_KEYS)


@cache
def field_types(cls: type) -> dict[str, object]:
    """A concern's field annotations, resolved (the modules use postponed annotations)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls) if f.init}


@cache
def training_field_types() -> dict[str, object]:
    """transformers' training keys and their annotations (``object`` where one cannot be resolved)."""
    hints = _training_hints()
    return {
        f.name: hints.get(f.name, object if isinstance(f.type, str) else f.type) for f in _training_fields()
    }


def key_help(groups: tuple[str, ...] = ()) -> list[KeyHelp]:
    """The catalog, in group order, for ``groups`` (all when empty)."""
    wanted = groups or tuple(GROUP_SUMMARIES)
    rows: list[KeyHelp] = []
    for name, cls in CONCERNS.items():
        if name in wanted:
            types = field_types(cls)
            rows += [
                KeyHelp(f.name, name, describe_type(types[f.name]), _default(f), f.metadata.get("help", ""))
                for f in dataclasses.fields(cls)
            ]
    if TRAINING_GROUP in wanted:
        owners = key_owners()
        types = training_field_types()
        rows += [
            KeyHelp(f.name, TRAINING_GROUP, describe_type(types[f.name]), _default(f), _first_sentences(f))
            for f in _training_fields()
            if f.name not in owners  # use_cache, gradient_checkpointing: ours win (docs/design.md)
        ]
    return rows


def format_key_help(groups: tuple[str, ...] = ()) -> str:
    """``lmforge <command> --help keys [group ...]``: each key with its type, default and help."""
    lines: list[str] = []
    group = None
    for row in key_help(groups):
        if row.group != group:
            group = row.group
            lines += [""] if lines else []
            lines.append(f"{group}: {GROUP_SUMMARIES[group]}")
        lines.append(f"  {row.name}: {row.kind}; default {row.default}")
        if row.help:
            lines += textwrap.wrap(row.help, 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
    if not groups or TRAINING_GROUP in groups:
        legacy = ", ".join(sorted(LEGACY_TRAINING_KEYS))
        lines += ["", *textwrap.wrap(f"transformers 4 names, translated to transformers 5: {legacy}.", 100)]
    if groups:
        return "\n".join(lines)
    off = ", ".join(
        key for key, default in UNSUPPORTED_LLAMAFACTORY_KEYS.items() if default is not NO_DEFAULT
    )
    lines += [
        "",
        *textwrap.wrap(
            f"LLaMA-Factory keys accepted only at LLaMA-Factory's default (lmforge does not implement them): {off}.",
            100,
        ),
    ]
    return "\n".join(lines)


def _default(f: dataclasses.Field[object]) -> str:
    if f.default is not dataclasses.MISSING:
        value: object = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "[]"
    return getattr(value, "value", value).__str__()


def _first_sentences(f: dataclasses.Field[object], limit: int = 240) -> str:
    text = " ".join(str(f.metadata.get("help", "")).split())
    if len(text) <= limit:
        return text
    cut = text.rfind(". ", 0, limit)
    return text[: cut + 1] if cut > 0 else text[:limit].rstrip() + "..."


@cache
def _training_fields() -> tuple[dataclasses.Field[object], ...]:
    # transformers (and torch with it) loads only when a training key is looked up
    from transformers import Seq2SeqTrainingArguments

    return tuple(
        f for f in dataclasses.fields(Seq2SeqTrainingArguments) if f.init and not f.name.startswith("_")
    )


@cache
def _training_hints() -> dict[str, object]:
    from transformers import Seq2SeqTrainingArguments  # as above: only when a training key is looked up

    try:
        return dict(typing.get_type_hints(Seq2SeqTrainingArguments))
    except Exception:  # a forward reference transformers never resolves: fall back per field
        return {}
