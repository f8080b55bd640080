"""Preference samples (``stage: dpo``, ``rm``, ``kto``): one prompt, then each answer, as token ids.

Each answer is encoded as the whole conversation ``prompt + answer`` by the same
``Template.encode_batch`` as SFT, so its ids are exactly what the model sees at inference.
The prompt is what the answers share: the longest common prefix of each answer's ids with
the prompt encoded as a generation prompt (the template's assistant header included). A
token the tokenizer merges across the header/answer boundary therefore counts as answer,
and the prompt ids plus each answer's ids are exactly the encoding of that conversation.

Labels train the answer (and its end-of-turn token); the prompt, earlier replies included,
is -100 unless ``train_on_prompt``. Truncation keeps the prompt plus the longer answer within
``cutoff_len`` (see :func:`~lmforge.data.encoding.fit_preference`): the prompt loses its start
(a BOS that opens it stays), never its assistant header, and answers are cut only when the prompt cannot
give more. Records and pairs that cannot be used are dropped and counted, as for SFT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lmforge.conversation import Conversation
from lmforge.data.encoding import (
    ChunkOutput,
    DatasetReport,
    EncodeSettings,
    drop_record,
    fit_preference,
    kto_views,
    pair_views,
    required_template,
)
from lmforge.data.records import BadRecord, Converter
from lmforge.data.registry import DatasetSpec
from lmforge.errors import ConfigError
from lmforge.media.samples import MEDIA_COLUMN, MediaDrop, expand_sample, media_refs, placeholder_counts
from lmforge.templates.results import IGNORE_INDEX

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from lmforge.media.inputs import MediaProcessing
    from lmforge.templates import ChatTemplate

logger = logging.getLogger(__name__)

PAIRWISE_STAGES = ("dpo", "rm")
PREFERENCE_STAGES = (*PAIRWISE_STAGES, "kto")
PAIR_COLUMNS = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")
KTO_COLUMNS = ("input_ids", "labels")


def is_preference(stage: str) -> bool:
    return stage in PREFERENCE_STAGES


def check_preference_spec(spec: DatasetSpec, stage: str) -> None:
    """A pairwise stage needs a ranking dataset with both reply columns (one line naming it)."""
    if stage not in PAIRWISE_STAGES:
        if spec.ranking and not (spec.columns.chosen and spec.columns.rejected):
            raise _no_reply_columns(spec)
        if not spec.ranking and not spec.columns.kto_tag:
            logger.warning("%s names no kto_tag column: every sample is desirable", spec.describe())
        return
    if not spec.ranking:
        raise ConfigError(
            f"{spec.describe()} is not a preference dataset, and stage '{stage}' trains on pairs; register it "
            "with ranking: true and columns chosen and rejected in dataset_info.json"
        )
    if not (spec.columns.chosen and spec.columns.rejected):
        raise _no_reply_columns(spec)


def _no_reply_columns(spec: DatasetSpec) -> ConfigError:
    return ConfigError(
        f"{spec.describe()} has ranking: true but does not name its reply columns; add "
        '"columns": {"chosen": ..., "rejected": ...} to its dataset_info.json entry'
    )


@dataclass
class PreferenceChunk(ChunkOutput):
    """One chunk's preference rows, column by column, and what was dropped on the way."""

    ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))  # no flat SFT rows
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    lengths: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    columns: dict[str, list[Any]] = field(default_factory=dict)
    desirable: int = 0


@dataclass
class _Item:
    index: int
    prompt: Conversation
    answers: list[Conversation]
    tag: bool | None = None


def encode_preference_chunk(
    rows: list[dict[str, Any]],
    indices: list[int] | range,
    *,
    convert: Converter,
    template: ChatTemplate | None,
    tokenizer: PreTrainedTokenizerBase,
    settings: EncodeSettings,
    locate: Callable[[int], str],
    dataset: str,
    media: MediaProcessing | None = None,
) -> PreferenceChunk:
    """Encode one chunk of preference rows (the signature of :func:`~lmforge.data.encoding.encode_chunk`)."""
    template = required_template(template, settings.stage)
    pairwise = settings.stage in PAIRWISE_STAGES
    names = PAIR_COLUMNS if pairwise else KTO_COLUMNS
    out = PreferenceChunk(columns={name: [] for name in (*names, "prompt_length")})
    if not pairwise:
        out.columns["kto_tag"] = []
    if media is not None:
        out.media = []

    def drop(reason: str, detail: str, index: int) -> None:
        drop_record(out, reason, detail, index, locate, dataset, settings.strict)

    items: list[_Item] = []
    for index, row in zip(indices, rows, strict=True):
        try:
            conv = convert(row)
            if pairwise:
                prompt, chosen, rejected = pair_views(conv)
                items.append(_Item(index, prompt, [chosen, rejected]))
            else:
                items.extend(_Item(index, p, [a], tag) for p, a, tag in kto_views(conv))
        except BadRecord as bad:
            drop(bad.reason, bad.detail, index)
    if not items:
        return out

    thinking = settings.enable_thinking
    answers = template.encode_batch(
        tokenizer,
        [answer for item in items for answer in item.answers],
        train_on_prompt=settings.train_on_prompt,
        mask_history=not settings.train_on_prompt,
        enable_thinking=thinking,
    )
    prompts = template.encode_batch(
        tokenizer, [item.prompt for item in items], add_generation_prompt=True, enable_thinking=thinking
    )
    per_item = len(items[0].answers)
    samples: list[_Sample] = []
    for k, item in enumerate(items):
        encoded = answers[k * per_item : (k + 1) * per_item]
        sample = _Sample(
            item, prompts[k].input_ids, [e.input_ids for e in encoded], [e.labels for e in encoded]
        )
        try:
            if media is not None:
                sample.expand(media)
        except MediaDrop as bad:
            drop(bad.reason, bad.detail, item.index)
            continue
        samples.append(sample)

    cutoff = settings.cutoff_len
    too_long = [s for s in samples if s.length > cutoff]
    if too_long:  # the prompts without their assistant header tell how long the header is
        bare = template.encode_batch(tokenizer, [s.item.prompt for s in too_long], enable_thinking=thinking)
        for sample, without_header in zip(too_long, bare, strict=True):
            header = len(sample.generation_prompt) - _common_prefix(
                without_header.input_ids, sample.generation_prompt
            )
            sample.header = max(0, header - sample.header_in_answer)
    bos = getattr(tokenizer, "bos_token_id", None)
    for sample in samples:
        if sample.length > cutoff:
            reason = sample.cut(cutoff, bos, media)
            if reason is not None:
                drop(reason, f"{sample.length} tokens for cutoff_len {cutoff}", sample.item.index)
                continue
            out.truncated += 1
        if not all(
            any(label != IGNORE_INDEX for label in labels[sample.prompt_length :]) for labels in sample.labels
        ):
            drop("nothing to train on", "an answer has no trained token", sample.item.index)
            continue
        for name, values in zip(names, _interleave(sample.ids, sample.labels), strict=True):
            out.columns[name].append(values)
        out.columns["prompt_length"].append(sample.prompt_length)
        if not pairwise:
            out.columns["kto_tag"].append(bool(sample.item.tag))
            out.desirable += bool(sample.item.tag)
        if out.media is not None:
            out.media.append(sample.refs)
    return out


def _interleave(ids: list[list[int]], labels: list[list[int]]) -> list[list[int]]:
    """``[ids_0, labels_0, ids_1, labels_1, ...]``: the column order of :data:`PAIR_COLUMNS`."""
    return [seq for pair in zip(ids, labels, strict=True) for seq in pair]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class _Sample:
    """One prompt with its answers' whole encodings, while they are expanded and fitted."""

    def __init__(
        self, item: _Item, generation_prompt: list[int], ids: list[list[int]], labels: list[list[int]]
    ) -> None:
        self.item = item
        self.generation_prompt = generation_prompt
        self.ids = [list(seq) for seq in ids]
        self.labels = [list(seq) for seq in labels]
        self.prompt_length = min(_common_prefix(generation_prompt, seq) for seq in self.ids)
        # generation-prompt tokens the tokenizer merged into an answer (a header's newline, say)
        self.header_in_answer = len(generation_prompt) - self.prompt_length
        self.header = 0  # tokens at the prompt's end that truncation keeps (set when it is needed)
        self.refs: list[str] = []

    @property
    def length(self) -> int:
        return max(map(len, self.ids))

    def expand(self, media: MediaProcessing) -> None:
        """Repeat the prompt's media placeholders per feature (media belong to the prompt)."""
        self.refs = media_refs(self.item.prompt)
        if not self.refs:
            return
        first_ids, first_labels = self.ids[0], self.labels[0]
        if any(placeholder_counts(seq[self.prompt_length :], media) for seq in self.ids):
            raise MediaDrop("media in an answer", "media placeholders belong to the prompt, not an answer")
        ids, labels = expand_sample(first_ids, first_labels, self.refs, media)
        grown = len(ids) - len(first_ids)
        prompt_ids, prompt_labels = ids[: self.prompt_length + grown], labels[: self.prompt_length + grown]
        self.ids = [prompt_ids + seq[self.prompt_length :] for seq in self.ids]
        self.labels = [prompt_labels + seq[self.prompt_length :] for seq in self.labels]
        self.prompt_length += grown

    def cut(self, cutoff: int, bos: int | None, media: MediaProcessing | None) -> str | None:
        """Fit into ``cutoff`` tokens; the reason it cannot be, or None."""
        length = self.prompt_length
        # A BOS that opens the sequence stays (a chat-turn token that doubles as BOS, as in ChatML, does not).
        first = self.ids[0]
        keep_bos = int(
            bos is not None and length > self.header and first[0] == bos and bos not in first[1:length]
        )
        answer = self.length - length
        fitted = fit_preference(length, answer, self.header + keep_bos, cutoff)
        if fitted is None:
            return "prompt header does not fit cutoff_len"
        prompt_keep, answer_keep = fitted
        keep = list(range(keep_bos)) + list(range(length - (prompt_keep - keep_bos), length))
        new_ids = [[seq[i] for i in keep] + seq[length : length + answer_keep] for seq in self.ids]
        new_labels = [[seq[i] for i in keep] + seq[length : length + answer_keep] for seq in self.labels]
        if (
            media is not None
            and self.refs
            and placeholder_counts(new_ids[0][:prompt_keep], media)
            != placeholder_counts(self.ids[0][:length], media)
        ):
            return "media cut by cutoff_len"
        self.ids, self.labels, self.prompt_length = new_ids, new_labels, prompt_keep
        return None


def assemble_preference(
    outputs: list[ChunkOutput], report: DatasetReport, fingerprint: str = ""
) -> datasets.Dataset:
    """Chunk rows -> one ``datasets.Dataset`` (int32 lists, ``prompt_length``, ``kto_tag``, ``media``)."""
    # why: datasets and pyarrow load only when data is read or built, not on import
    import datasets
    import pyarrow as pa

    chunks = [out for out in outputs if isinstance(out, PreferenceChunk)]
    names = list(chunks[0].columns) if chunks else [*PAIR_COLUMNS, "prompt_length"]
    data: dict[str, list[Any]] = {name: [] for name in names}
    for out in chunks:
        report.truncated += out.truncated
        report.merge_drops(out.dropped, out.first_dropped)
        report.desirable += out.desirable
        for name in names:
            data[name].extend(out.columns.get(name, []))
    schema: dict[str, Any] = {}
    for name in names:
        if name == "prompt_length":
            schema[name] = datasets.Value("int32")
        elif name == "kto_tag":
            schema[name] = datasets.Value("bool")
        else:
            schema[name] = datasets.List(datasets.Value("int32"))
    if any(out.media is not None for out in chunks):
        data[MEDIA_COLUMN] = [refs for out in chunks for refs in (out.media or [])]
        schema[MEDIA_COLUMN] = datasets.List(datasets.Value("string"))
    id_columns = [name for name in names if name.endswith("input_ids")]
    label_columns = [name for name in names if name.endswith("labels")]
    report.samples = len(data["prompt_length"])
    report.tokens = sum(len(seq) for name in id_columns for seq in data[name])
    report.trained_tokens = sum(
        sum(1 for label in seq if label != IGNORE_INDEX) for name in label_columns for seq in data[name]
    )
    fingerprint = fingerprint or f"lmforge-{report.name}-{report.samples}-{report.tokens}"
    features = datasets.Features(schema)
    # An explicit fingerprint: datasets would otherwise hash the whole table.
    return datasets.Dataset(
        pa.table(data, schema=features.arrow_schema),
        info=datasets.DatasetInfo(features=features),
        fingerprint=fingerprint,
    )
