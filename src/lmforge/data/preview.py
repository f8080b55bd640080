"""The first samples of each dataset exactly as the model sees them, with the trained tokens marked.

Shared by ``lmforge data preview`` (terminal) and the web UI's dataset preview: both read the
records, apply the template and truncation through the training encoder, and split each
sample into runs of trained and untrained text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from lmforge.data.encoding import ChunkOutput, EncodeSettings, encode_chunk
from lmforge.data.loader import encode_settings
from lmforge.data.records import Records, make_converter, open_dataset
from lmforge.data.registry import DatasetSpec, hub_options, resolve_datasets
from lmforge.errors import ConfigError
from lmforge.templates import resolve_template
from lmforge.templates.results import IGNORE_INDEX

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lmforge.config import Config
    from lmforge.templates import ChatTemplate

GREEN, RESET = "\033[32m", "\033[0m"
Chunk = TypeVar("Chunk", bound=ChunkOutput)


@dataclass
class PreviewSample:
    """One encoded sample: its ids and labels (-100: not trained)."""

    ids: list[int]
    labels: list[int]
    special_text: bool = False  # its text holds a special-token string (see data stats)

    @property
    def trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class DatasetPreview:
    """The first samples of one dataset, and why any of those first records were dropped."""

    split: str
    name: str
    formatting: str
    records: int
    samples: list[PreviewSample] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def preview_template(config: Config, tokenizer: PreTrainedTokenizerBase) -> ChatTemplate | None:
    """The template the run applies: none for pre-training without one."""
    if config.finetuning.stage == "pt" and not config.data.template:
        return None
    return resolve_template(config.data.template, tokenizer)


def dataset_specs(config: Config) -> list[tuple[str, DatasetSpec]]:
    """(split, spec) for every train and eval dataset the config names."""
    data = config.data
    specs = [("train", s) for s in resolve_datasets(data.dataset, data.dataset_dir, data.media_dir)]
    specs += [("eval", s) for s in resolve_datasets(data.eval_dataset, data.dataset_dir, data.media_dir)]
    if not specs:
        raise ConfigError(
            "config key 'dataset' is required: dataset names from dataset_info.json, or file paths"
        )
    return specs


def preview_datasets(
    config: Config, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate | None, n: int
) -> list[DatasetPreview]:
    """Encode the first ``n`` records of every dataset the way training does."""
    settings = encode_settings(config.data, config.finetuning.stage)
    previews = []
    for split, spec in dataset_specs(config):
        records, spec = open_dataset(spec, **hub_options(config))
        chunk = encode_first(records, spec, n, encode_chunk, tokenizer, template, settings)
        preview = DatasetPreview(split, spec.name, spec.formatting, len(records))
        start = 0
        for number, length in enumerate(chunk.lengths.tolist()):
            special = chunk.special_text[number] if number < len(chunk.special_text) else False
            preview.samples.append(
                PreviewSample(
                    chunk.ids[start : start + length].tolist(),
                    chunk.labels[start : start + length].tolist(),
                    bool(special),
                )
            )
            start += length
        preview.dropped = drop_lines(chunk, min(n, len(records)))
        previews.append(preview)
    return previews


def encode_first(
    records: Records,
    spec: DatasetSpec,
    n: int,
    encode: Callable[..., Chunk],
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate | None,
    settings: EncodeSettings,
) -> Chunk:
    """The first ``n`` records encoded by ``encode`` (SFT's or a preference stage's), as training does."""
    indices = range(min(n, len(records)))
    return encode(
        records.rows(indices),
        indices,
        convert=make_converter(spec),
        template=template,
        tokenizer=tokenizer,
        settings=settings,
        locate=records.locate,
        dataset=spec.name,
    )


def drop_lines(chunk: ChunkOutput, first: int) -> list[str]:
    """One line per reason the first ``first`` records lost some to."""
    return [
        f"dropped {count} of the first {first} records: {reason} (first: {chunk.first_dropped[reason]})"
        for reason, count in chunk.dropped.items()
    ]


def trained_runs(tokenizer: PreTrainedTokenizerBase, sample: PreviewSample) -> list[tuple[str, bool]]:
    """The sample decoded as consecutive (text, trained) runs."""
    ids, labels = sample.ids, sample.labels
    runs: list[tuple[str, bool]] = []
    start = 0
    while start < len(ids):
        trained = labels[start] != IGNORE_INDEX
        stop = start
        while stop < len(ids) and (labels[stop] != IGNORE_INDEX) == trained:
            stop += 1
        text = tokenizer.decode(ids[start:stop], skip_special_tokens=False)
        runs.append((text if isinstance(text, str) else "".join(text), trained))
        start = stop
    return runs


def highlight(tokenizer: PreTrainedTokenizerBase, ids: list[int], labels: list[int], colour: bool) -> str:
    """Decode ``ids`` with the trained runs marked: ANSI green on a terminal, ``[[...]]`` otherwise.

    The one highlighter of ``lmforge data preview`` and ``lmforge template render``.
    """
    return "".join(
        (f"{GREEN}{text}{RESET}" if colour else f"[[{text}]]") if trained else text
        for text, trained in trained_runs(tokenizer, PreviewSample(ids, labels))
    )


def share(part: int, whole: int) -> str:
    """``part`` as a percentage of ``whole`` (``-`` for nothing), as ``data stats`` prints shares."""
    return f"{100 * part / whole:.1f}%" if whole else "-"
