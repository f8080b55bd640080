"""Pack encoded samples into rows of at most ``cutoff_len`` tokens, without letting them see each other.

Each packed row keeps the lengths of its samples (``sample_lengths``); the collator turns them
into position ids that restart at every sample, and transformers builds a block-diagonal causal
mask from such position ids (SDPA/eager), or runs flash-attention's variable-length kernel.
The first label of every sample is masked, so no sample is trained to predict the next one's
first token: the loss of a packed row is exactly the sum of its samples' losses.

Rows are filled best-fit-decreasing, which wastes little space and is deterministic.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmforge.templates.results import IGNORE_INDEX

if TYPE_CHECKING:
    from datasets import Dataset

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
