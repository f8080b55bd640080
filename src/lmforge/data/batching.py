"""Step 5 of a sample's path: encoded samples -> packed rows (optional) -> padded training batches.

Packing puts samples into rows of at most ``cutoff_len`` tokens without letting them see each
other. Each packed row keeps the lengths of its samples (``sample_lengths``); the collator turns
them into position ids that restart at every sample, and transformers builds a block-diagonal
causal mask from such position ids (SDPA/eager), or runs flash-attention's variable-length
kernel. The first label of every sample is masked, so no sample is trained to predict the next
one's first token: the loss of a packed row is exactly the sum of its samples' losses. Rows are
filled best-fit-decreasing, which wastes little space and is deterministic.

The collator right-pads plain samples with an attention mask. Packed rows get position ids
restarting at each sample and no attention mask; padding at a row's end forms a sequence of its
own with labels -100. With ``flatten`` (flash-attention) a batch becomes one row with no padding.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lmforge.media.samples import MEDIA_COLUMN, batch_media
from lmforge.templates.results import IGNORE_INDEX

if TYPE_CHECKING:
    from datasets import Dataset  # why: datasets loads only when packing runs

    from lmforge.media.inputs import MediaProcessing

logger = logging.getLogger(__name__)

LENGTHS_COLUMN = "sample_lengths"


@dataclass(frozen=True)
class PackingReport:
    samples: int
    rows: int
    tokens: int
    capacity: int

    @property
    def fill(self) -> float:
        """Share of the rows' capacity holding real tokens."""
        return self.tokens / max(self.rows * self.capacity, 1)


def plan_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """Group sample indices into bins whose lengths sum to at most ``capacity`` (best fit, longest first).

    A sample longer than ``capacity`` gets a bin of its own rather than being cut or dropped.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, bin index), sorted
    for index in order:
        size = lengths[index]
        spot = bisect.bisect_left(free, (size, -1))
        if spot < len(free):
            space, bin_id = free.pop(spot)
            bins[bin_id].append(index)
            if space - size > 0:
                bisect.insort(free, (space - size, bin_id))
        else:
            bins.append([index])
            if capacity - size > 0:
                bisect.insort(free, (capacity - size, len(bins) - 1))
    return bins


def pack_dataset(dataset: Dataset, capacity: int) -> tuple[Dataset, PackingReport]:
    """Rows of ``input_ids``, ``labels`` and ``sample_lengths`` built from an encoded dataset."""
    from datasets import Dataset

    input_ids: list[list[int]] = dataset["input_ids"]
    labels: list[list[int]] = dataset["labels"]
    lengths = [len(ids) for ids in input_ids]
    oversized = sum(1 for n in lengths if n > capacity)
    if oversized:
        logger.warning(
            "%d samples are longer than cutoff_len=%d; each gets a row of its own", oversized, capacity
        )
    rows: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], LENGTHS_COLUMN: []}
    for members in plan_bins(lengths, capacity):
        members.sort()  # keep the original order inside a row
        row_ids: list[int] = []
        row_labels: list[int] = []
        for index in members:
            row_ids.extend(input_ids[index])
            sample_labels = list(labels[index])
            if sample_labels:
                sample_labels[0] = IGNORE_INDEX  # never predicted from the previous sample
            row_labels.extend(sample_labels)
        rows["input_ids"].append(row_ids)
        rows["labels"].append(row_labels)
        rows[LENGTHS_COLUMN].append([lengths[i] for i in members])
    report = PackingReport(
        samples=len(lengths), rows=len(rows["input_ids"]), tokens=sum(lengths), capacity=capacity
    )
    logger.info(
        "packed %d samples into %d rows of up to %d tokens (%.1f%% filled)",
        report.samples,
        report.rows,
        capacity,
        100 * report.fill,
    )
    return Dataset.from_dict(rows), report


def position_ids_for(sample_lengths: list[int]) -> list[int]:
    """Position ids restarting at 0 for each sample."""
    return [position for length in sample_lengths for position in range(length)]


# ---------------------------------------------------------------- batches


@dataclass
class TrainingCollator:
    pad_token_id: int
    pad_to_multiple_of: int | None = None
    flatten: bool = False
    media: MediaProcessing | None = None  # a multimodal model's: samples' media become pixel/audio features

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        packed = LENGTHS_COLUMN in features[0]
        if self.flatten:
            return self._flattened(features, packed)
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids, labels, masks, positions = [], [], [], []
        for feature in features:
            ids = list(feature["input_ids"])
            pad = longest - len(ids)
            input_ids.append(ids + [self.pad_token_id] * pad)
            labels.append(list(_labels_of(feature)) + [IGNORE_INDEX] * pad)
            if packed:
                positions.append(position_ids_for(feature[LENGTHS_COLUMN]) + list(range(pad)))
            else:
                masks.append([1] * len(ids) + [0] * pad)
        batch = {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }
        if packed:
            batch["position_ids"] = torch.tensor(positions, dtype=torch.long)
        else:
            batch["attention_mask"] = torch.tensor(masks, dtype=torch.long)
        if self.media is not None and MEDIA_COLUMN in features[0]:
            batch.update(
                batch_media([list(f[MEDIA_COLUMN]) for f in features], batch["input_ids"], self.media)
            )
        return batch

    def _flattened(self, features: list[dict[str, Any]], packed: bool) -> dict[str, torch.Tensor]:
        input_ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for feature in features:
            lengths = feature[LENGTHS_COLUMN] if packed else [len(feature["input_ids"])]
            sample_labels = list(_labels_of(feature))
            start = 0
            for length in lengths:
                if sample_labels[start : start + length]:
                    sample_labels[start] = IGNORE_INDEX  # never predicted across a sample boundary
                start += length
            input_ids.extend(feature["input_ids"])
            labels.extend(sample_labels)
            positions.extend(position_ids_for(lengths))
        return {
            "input_ids": torch.tensor([input_ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": torch.tensor([positions], dtype=torch.long),
        }


def _labels_of(feature: dict[str, Any]) -> list[int]:
    labels = feature.get("labels")
    return list(feature["input_ids"]) if labels is None else list(labels)


def trained_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens the loss is computed on (labels other than -100, after the causal shift)."""
    return int((batch["labels"][..., 1:] != IGNORE_INDEX).sum())
