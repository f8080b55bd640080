"""Rows -> Conversations -> ids and labels, a chunk at a time, into flat arrays.

One chunk is converted, checked for its stage, encoded with one ``Template.encode_batch``
call (one fast-tokenizer call over the chunk) and truncated to ``cutoff_len``. The result is
kept as flat int32 arrays plus lengths, which become an arrow list column without a
Python-level copy per token. Records that cannot be trained on are counted by reason, or
stop the run under ``strict``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lmforge.data.checks import pt_text, sft_view
from lmforge.data.formats import BadRecord, Converter
from lmforge.data.truncation import split_text, truncate
from lmforge.errors import DataError
from lmforge.media.samples import MediaDrop, expand_sample, media_refs, placeholder_counts
from lmforge.templates.results import IGNORE_INDEX

if TYPE_CHECKING:
    from lmforge.media.inputs import MediaProcessing


@dataclass(frozen=True)
class EncodeSettings:
    """Everything besides the data, tokenizer and template that changes the encoded result."""

    stage: str = "sft"
    cutoff_len: int = 2048
    train_on_prompt: bool = False
    mask_history: bool = False
    enable_thinking: bool = True
    strict: bool = False


@dataclass
class ChunkOutput:
    """Encoded samples of one chunk as flat arrays, and what was dropped on the way."""

    ids: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    truncated: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    first_dropped: dict[str, str] = field(default_factory=dict)
    media: list[list[str]] | None = None  # per sample, its ``kind:path`` media (multimodal models only)
    # per sample: its text holds a special-token string of the tokenizer (usually a scraping accident)
    special_text: list[bool] = field(default_factory=list)
    first_special_text: str = ""


def _flatten(lists: list[list[int]], total: int) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int32, count=total)


def _pack(ids: list[list[int]], labels: list[list[int]], out: ChunkOutput) -> ChunkOutput:
    lengths = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
    total = int(lengths.sum())
    out.ids = _flatten(ids, total)
    out.labels = _flatten(labels, total)
    out.lengths = lengths
    return out


def encode_chunk(
    rows: list[dict[str, Any]],
    indices: list[int] | range,
    *,
    convert: Converter,
    template: Any,
    tokenizer: Any,
    settings: EncodeSettings,
    locate: Callable[[int], str],
    dataset: str,
    media: MediaProcessing | None = None,
) -> ChunkOutput:
    """Encode one chunk of rows; ``indices`` are their record indices (for drop messages).

    With ``media`` (a multimodal model's processing) each sample's media placeholders are
    expanded to the model's token counts and its media references are kept (``out.media``).
    """
    out = ChunkOutput(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.int32))
    kept: list[Any] = []
    kept_index: list[int] = []
    sft = settings.stage == "sft"
    for index, row in zip(indices, rows, strict=True):
        try:
            conv = convert(row)
            kept.append(sft_view(conv) if sft else pt_text(conv))
            kept_index.append(index)
        except BadRecord as bad:
            _drop(out, bad.reason, bad.detail, index, locate, dataset, settings.strict)
    if not kept:
        return out
    if sft:
        encoded = template.encode_batch(
            tokenizer,
            kept,
            train_on_prompt=settings.train_on_prompt,
            mask_history=settings.mask_history,
            enable_thinking=settings.enable_thinking,
        )
        all_ids: list[list[int]] = []
        all_labels: list[list[int]] = []
        all_index: list[int] = []
        all_media: list[list[str]] = []
        all_special: list[bool] = []
        cutoff = settings.cutoff_len
        for sample, index, conv in zip(encoded, kept_index, kept, strict=True):
            ids, labels = sample.input_ids, sample.labels
            refs: list[str] = []
            if media is not None:
                try:
                    refs = media_refs(conv)
                    if refs:
                        ids, labels = expand_sample(list(ids), list(labels), refs, media)
                except MediaDrop as drop:
                    _drop(out, drop.reason, drop.detail, index, locate, dataset, settings.strict)
                    continue
            if len(ids) > cutoff:
                fitted = truncate(ids, labels, cutoff)
                if fitted is None:
                    detail = f"no trained token within cutoff_len {cutoff}"
                    _drop(out, "nothing to train on", detail, index, locate, dataset, settings.strict)
                    continue
                if (
                    refs
                    and media is not None
                    and placeholder_counts(fitted[0], media) != placeholder_counts(ids, media)
                ):
                    detail = f"{len(ids)} tokens with its media; raise cutoff_len or lower image_max_pixels"
                    _drop(out, "media cut by cutoff_len", detail, index, locate, dataset, settings.strict)
                    continue
                ids, labels = fitted
                out.truncated += 1
            all_ids.append(ids)
            all_labels.append(labels)
            all_index.append(index)
            all_media.append(refs)
            all_special.append(sample.special_text)
        _pack(all_ids, all_labels, out)
        if media is not None:
            out.media = all_media
        untrained = _untrained(out.labels, out.lengths)
        if untrained.any():  # rare: a sample whose template trains nothing (checked on the flat arrays)
            for position in np.flatnonzero(untrained).tolist():
                detail = "no token of the sample is trained"
                _drop(
                    out, "nothing to train on", detail, all_index[position], locate, dataset, settings.strict
                )
            keep_tokens = np.repeat(~untrained, out.lengths)
            out.ids, out.labels = out.ids[keep_tokens], out.labels[keep_tokens]
            out.lengths = out.lengths[~untrained]
            all_index = [i for i, gone in zip(all_index, untrained.tolist(), strict=True) if not gone]
            all_special = [f for f, gone in zip(all_special, untrained.tolist(), strict=True) if not gone]
            if out.media is not None:
                out.media = [
                    refs for refs, gone in zip(out.media, untrained.tolist(), strict=True) if not gone
                ]
        out.special_text = all_special
        if any(all_special):
            out.first_special_text = locate(all_index[all_special.index(True)])
        return out
    return _pack_pretraining(kept, tokenizer, settings, out)


def _untrained(labels: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per sample: True when no label after its first position is trained (a causal LM learns nothing)."""
    if not len(lengths):
        return np.zeros(0, dtype=bool)
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    trained = labels != IGNORE_INDEX
    trained[starts[lengths > 0]] = False
    counts = np.add.reduceat(trained.astype(np.int32), np.minimum(starts, max(len(trained) - 1, 0)))
    counts[lengths == 0] = 0
    return counts == 0


def _pack_pretraining(
    texts: list[str], tokenizer: Any, settings: EncodeSettings, out: ChunkOutput
) -> ChunkOutput:
    """Pre-training: each text with the tokenizer's own special tokens plus EOS, every token trained."""
    eos = tokenizer.eos_token_id
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    windows: list[list[int]] = []
    for ids in encoded:
        if eos is not None and (not ids or ids[-1] != eos):
            ids = [*ids, eos]
        if len(ids) > settings.cutoff_len:
            out.truncated += 1
        parts = split_text(ids, settings.cutoff_len)
        windows.extend(parts)
    return _pack(windows, windows, out)


def _drop(
    out: ChunkOutput,
    reason: str,
    detail: str,
    index: int,
    locate: Callable[[int], str],
    dataset: str,
    strict: bool,
) -> None:
    if strict:
        raise DataError(
            f"dataset '{dataset}': {locate(index)}: {reason} ({detail}); fix the record, or set strict: false "
            "to drop such records and count them"
        )
    out.dropped[reason] += 1
    if reason not in out.first_dropped:
        out.first_dropped[reason] = f"{locate(index)}: {detail}" if detail else locate(index)
