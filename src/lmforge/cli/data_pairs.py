"""``lmforge data preview`` / ``data stats`` for preference stages: the prompt once, then each answer.

A pair is shown as its prompt followed by the chosen and then the rejected answer, trained
tokens marked as for SFT; ``stats`` gives the length distribution of prompts and of each
answer side, with truncated and dropped pairs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

import numpy as np

from lmforge.data.loader import encode_dataset, encode_settings, training_seed
from lmforge.data.preference import (
    PAIRWISE_STAGES,
    PreferenceChunk,
    check_preference_spec,
    encode_preference_chunk,
)
from lmforge.data.preview import dataset_specs, drop_lines, encode_first, highlight, share
from lmforge.data.records import open_dataset
from lmforge.data.registry import hub_options
from lmforge.templates.results import IGNORE_INDEX

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lmforge.config import Config
    from lmforge.templates import ChatTemplate


def _answers(stage: str) -> list[tuple[str, str]]:
    """(label, column prefix) of each answer a row holds."""
    return (
        [("chosen", "chosen_"), ("rejected", "rejected_")] if stage in PAIRWISE_STAGES else [("answer", "")]
    )


def write_pairs(
    chunk: PreferenceChunk, stage: str, tokenizer: PreTrainedTokenizerBase, colour: bool, out: TextIO
) -> None:
    """Each row of ``chunk``: its prompt once, then each answer, trained tokens marked."""
    columns = chunk.columns
    kind = "pair" if stage in PAIRWISE_STAGES else "sample"
    for number, prompt_length in enumerate(columns["prompt_length"]):
        tag = ""
        if "kto_tag" in columns:
            tag = " (desirable)" if columns["kto_tag"][number] else " (undesirable)"
        sides = []
        for name, prefix in _answers(stage):
            ids, labels = columns[f"{prefix}input_ids"][number], columns[f"{prefix}labels"][number]
            trained = sum(1 for label in labels if label != IGNORE_INDEX)
            sides.append((name, ids, labels, f"{name} {len(ids) - prompt_length} tokens ({trained} trained)"))
        out.write(
            f"--- {kind} {number}{tag}: prompt {prompt_length} tokens, {', '.join(s[3] for s in sides)}\n"
        )
        first_ids, first_labels = sides[0][1], sides[0][2]
        out.write(
            highlight(tokenizer, first_ids[:prompt_length], first_labels[:prompt_length], colour) + "\n"
        )
        for name, ids, labels, _ in sides:
            out.write(f">>> {name}:\n")
            out.write(highlight(tokenizer, ids[prompt_length:], labels[prompt_length:], colour) + "\n")


def preview_pairs(
    config: Config, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate | None, n: int, out: TextIO
) -> None:
    """``data preview`` for dpo/rm/kto: the first ``n`` rows of every dataset, encoded as training does."""
    stage = config.finetuning.stage
    settings = encode_settings(config.data, stage)
    colour = out.isatty()
    for split, spec in dataset_specs(config):
        records, spec = open_dataset(spec, **hub_options(config))
        check_preference_spec(spec, stage)
        chunk = encode_first(records, spec, n, encode_preference_chunk, tokenizer, template, settings)
        out.write(f"=== {split} dataset '{spec.name}' ({spec.formatting}, {len(records)} records)\n")
        write_pairs(chunk, stage, tokenizer, colour, out)
        for line in drop_lines(chunk, min(n, len(records))):
            out.write(f"--- {line}\n")
        out.write("\n")


def stats_preference(
    config: Config, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate | None, out: TextIO
) -> None:
    """Encode every dataset (cached) and print pair counts and prompt/answer length distributions."""
    stage = config.finetuning.stage
    settings = encode_settings(config.data, stage)
    seed = training_seed(config)
    unit = "pairs" if stage in PAIRWISE_STAGES else "samples"
    out.write(f"stage {stage}, cutoff_len {settings.cutoff_len}\n")
    drops: list[str] = []
    for split, spec in dataset_specs(config):
        dataset, report = encode_dataset(
            spec, tokenizer, template, settings, config.data, seed, split, hub_options(config)
        )
        kto = f", {report.desirable} desirable" if stage == "kto" else ""
        out.write(
            f"{report.name} ({split}): {report.records} records, {report.samples} {unit}{kto}, "
            f"{report.truncated} truncated, {report.dropped_total} dropped, "
            f"{share(report.trained_tokens, report.tokens)} of tokens trained\n"
        )
        prompt = np.asarray(dataset["prompt_length"], dtype=np.int64)
        out.write(f"  {'lengths':<10} {'min':>6} {'median':>7} {'p95':>7} {'max':>7}\n")
        out.write(_lengths("prompt", prompt) + "\n")
        for name, prefix in _answers(stage):
            sizes = np.asarray([len(ids) for ids in dataset[f"{prefix}input_ids"]], dtype=np.int64)
            out.write(_lengths(name, sizes - prompt) + "\n")
        for reason, count in report.dropped.items():
            drops.append(
                f"  {report.name}: {count} {reason} (first: {report.first_dropped.get(reason, '?')})"
            )
    if drops:
        out.write(f"dropped {unit}, by reason:\n" + "\n".join(drops) + "\n")


def _lengths(name: str, values: np.ndarray) -> str:
    if not len(values):
        return f"  {name:<10} {'-':>6} {'-':>7} {'-':>7} {'-':>7}"
    return (
        f"  {name:<10} {int(values.min()):>6} {float(np.median(values)):>7.0f} "
        f"{float(np.percentile(values, 95)):>7.0f} {int(values.max()):>7}"
    )
