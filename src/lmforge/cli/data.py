"""``lmforge data preview cfg.yaml [--n 3]`` and ``lmforge data stats cfg.yaml``.

``preview`` shows the first samples of each dataset exactly as the model will see them
(the template applied, truncated to ``cutoff_len``), with the trained tokens highlighted:
green on a terminal, between ``[[`` and ``]]`` otherwise. ``stats`` encodes the datasets
(through the same cache as training) and prints their sizes, length distribution,
truncation, drops and the share of tokens that are trained on.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

import numpy as np
import pyarrow.compute as pc

from lmforge.cli.data_pairs import preview_pairs, stats_preference
from lmforge.config import Config, load_config
from lmforge.data.loader import encode_dataset, encode_settings, training_seed
from lmforge.data.preview import dataset_specs, highlight, preview_datasets, preview_template, share
from lmforge.data.registry import hub_options
from lmforge.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lmforge.templates import ChatTemplate

USAGE = """\
Usage:
  lmforge data preview cfg.yaml [key=value ...] [--n 3]   first samples as the model sees them
  lmforge data stats cfg.yaml [key=value ...]             sizes, lengths, truncation, drops

The config is a training config: dataset, dataset_dir, template, cutoff_len, stage, ... apply."""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in ("preview", "stats"):
        raise ConfigError(
            f"unknown data command '{command}'; use `lmforge data preview` or `lmforge data stats`"
        )
    if any(a in ("-h", "--help") for a in rest):
        print(USAGE)
        return 0
    n, rest = _take_n(rest)
    config = load_config(rest)
    tokenizer = _tokenizer(config)
    template = preview_template(config, tokenizer)
    if command == "preview":
        preview(config, tokenizer, template, n, sys.stdout)
    else:
        stats(config, tokenizer, template, sys.stdout)
    return 0


def _take_n(argv: list[str]) -> tuple[int, list[str]]:
    """Pull ``--n N`` / ``--n=N`` out of the arguments (the rest is a config and its overrides)."""
    n, rest, i = 3, [], 0
    while i < len(argv):
        arg = argv[i]
        value = None
        if arg == "--n":
            if i + 1 >= len(argv):
                raise ConfigError("--n needs a number of samples, e.g. --n 3")
            value, i = argv[i + 1], i + 2
        elif arg.startswith("--n="):
            value, i = arg[4:], i + 1
        else:
            rest.append(arg)
            i += 1
            continue
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"--n must be a positive whole number, got {value!r}")
        n = int(value)
    return n, rest


def _tokenizer(config: Config) -> PreTrainedTokenizerBase:
    from lmforge.model.loader import (
        load_tokenizer,  # why: the model layer (torch) loads only once a command runs
    )

    return load_tokenizer(config.model)


# A sample whose text holds a special-token string: usually a scraping accident that, encoded as
# control tokens, teaches a model to end turns early.
SPECIAL_TEXT_NOTE = "special-token text in it ({split})"


def settings_split(tokenizer: PreTrainedTokenizerBase) -> str:
    """How such text is encoded, by the config's split_special_tokens."""
    if getattr(tokenizer, "split_special_tokens", False):
        return "split into plain text: split_special_tokens is true"
    return "encoded as control tokens; split_special_tokens: true makes it plain text"


# ---------------------------------------------------------------- preview


def preview(
    config: Config, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate | None, n: int, out: TextIO
) -> None:
    """Print the first ``n`` samples of every dataset with their trained tokens marked."""
    if config.finetuning.stage in ("dpo", "rm", "kto"):  # the prompt once, then each answer
        preview_pairs(config, tokenizer, template, n, out)
        return
    colour = out.isatty()
    for found in preview_datasets(config, tokenizer, template, n):
        out.write(f"=== {found.split} dataset '{found.name}' ({found.formatting}, {found.records} records)\n")
        for number, sample in enumerate(found.samples):
            note = (
                f", {SPECIAL_TEXT_NOTE.format(split=settings_split(tokenizer))}"
                if sample.special_text
                else ""
            )
            out.write(f"--- sample {number}: {len(sample.ids)} tokens, {sample.trained} trained{note}\n")
            out.write(highlight(tokenizer, sample.ids, sample.labels, colour) + "\n")
        for line in found.dropped:
            out.write(f"--- {line}\n")
        out.write("\n")


# ---------------------------------------------------------------- stats


def stats(
    config: Config, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate | None, out: TextIO
) -> None:
    """Encode every dataset (cached) and print its numbers."""
    if config.finetuning.stage in ("dpo", "rm", "kto"):  # pairs: prompt and answer lengths
        return stats_preference(config, tokenizer, template, out)
    stage = config.finetuning.stage
    settings = encode_settings(config.data, stage)
    seed = training_seed(config)
    header = (
        f"{'dataset':<28} {'split':<5} {'records':>8} {'samples':>8} {'min':>6} {'median':>7} {'p95':>7} "
        f"{'max':>7} {'truncated':>9} {'dropped':>8} {'trained':>8}"
    )
    out.write(f"stage {stage}, cutoff_len {settings.cutoff_len}\n{header}\n")
    all_lengths = []
    drops: list[str] = []
    specials: list[str] = []
    totals = {"records": 0, "samples": 0, "truncated": 0, "dropped": 0, "tokens": 0, "trained": 0}
    for split, spec in dataset_specs(config):
        dataset, report = encode_dataset(
            spec, tokenizer, template, settings, config.data, seed, split, hub_options(config)
        )
        lengths = pc.list_value_length(dataset.data.column("input_ids")).to_numpy()
        all_lengths.append(lengths)
        out.write(
            _row(
                report.name,
                split,
                report.records,
                report.samples,
                lengths,
                report.truncated,
                report.dropped_total,
                report.trained_tokens,
                report.tokens,
            )
            + "\n"
        )
        for reason, count in report.dropped.items():
            drops.append(
                f"  {report.name}: {count} {reason} (first: {report.first_dropped.get(reason, '?')})"
            )
        if report.special_text:
            specials.append(f"  {report.name}: {report.special_text} (first: {report.first_special_text})")
        totals["records"] += report.records
        totals["samples"] += report.samples
        totals["truncated"] += report.truncated
        totals["dropped"] += report.dropped_total
        totals["tokens"] += report.tokens
        totals["trained"] += report.trained_tokens
    if len(all_lengths) > 1:
        out.write(
            _row(
                "(all)",
                "",
                totals["records"],
                totals["samples"],
                np.concatenate(all_lengths),
                totals["truncated"],
                totals["dropped"],
                totals["trained"],
                totals["tokens"],
            )
            + "\n"
        )
    out.write(
        f"tokens: {totals['tokens']}, trained on: {totals['trained']} "
        f"({share(totals['trained'], totals['tokens'])})\n"
    )
    if drops:
        out.write("dropped records, by reason:\n" + "\n".join(drops) + "\n")
    if specials:
        out.write(
            f"samples whose text holds special-token strings ({settings_split(tokenizer)}):\n"
            + "\n".join(specials)
            + "\n"
        )


def _row(
    name: str,
    split: str,
    records: int,
    samples: int,
    lengths: np.ndarray,
    truncated: int,
    dropped: int,
    trained: int,
    tokens: int,
) -> str:
    if len(lengths):
        lo, med, p95, hi = (
            int(lengths.min()),
            float(np.median(lengths)),
            float(np.percentile(lengths, 95)),
            int(lengths.max()),
        )
    else:
        lo = hi = 0
        med = p95 = 0.0
    return (
        f"{name[:28]:<28} {split:<5} {records:>8} {samples:>8} {lo:>6} {med:>7.0f} {p95:>7.0f} {hi:>7} "
        f"{truncated:>9} {dropped:>8} {share(trained, tokens):>8}"
    )
