"""One file format for tokenized samples, so two tools' outputs can be compared sample by sample.

A ``.npz`` with ``input_ids`` and ``labels`` (every sample concatenated, int64) and ``offsets``
(``n_samples + 1`` boundaries). numpy only: it is written inside LLaMA-Factory's venv (numpy 1)
and read in lmforge's (numpy 2), and ``.npz`` reads the same in both.

    save_encoded(path, input_ids_per_sample, labels_per_sample)
    ids, labels = load_encoded(path)            # lists of lists of int
    report = compare_encoded(path_a, path_b)    # counts of differing samples
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def save_encoded(
    path: str | Path, input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]]
) -> Path:
    """Write samples to ``path`` (via a temporary name, so a killed run leaves no half file)."""
    if len(input_ids) != len(labels):
        raise ValueError(f"{len(input_ids)} input_ids rows but {len(labels)} labels rows")
    lengths = np.fromiter((len(row) for row in input_ids), dtype=np.int64, count=len(input_ids))
    label_lengths = np.fromiter((len(row) for row in labels), dtype=np.int64, count=len(labels))
    if not np.array_equal(lengths, label_lengths):
        bad = int(np.flatnonzero(lengths != label_lengths)[0])
        raise ValueError(f"sample {bad}: {lengths[bad]} input_ids but {label_lengths[bad]} labels")
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat_ids = np.fromiter((t for row in input_ids for t in row), dtype=np.int64, count=int(offsets[-1]))
    flat_labels = np.fromiter((t for row in labels for t in row), dtype=np.int64, count=int(offsets[-1]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, input_ids=flat_ids, labels=flat_labels, offsets=offsets)
    os.replace(tmp, path)
    return path


def load_arrays(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(input_ids, labels, offsets)`` flat arrays as stored."""
    with np.load(path) as data:
        return data["input_ids"], data["labels"], data["offsets"]


def load_encoded(path: str | Path) -> tuple[list[list[int]], list[list[int]]]:
    """The samples as lists of token ids and label ids."""
    ids, labels, offsets = load_arrays(path)
    bounds = list(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True))
    return [ids[a:b].tolist() for a, b in bounds], [labels[a:b].tolist() for a, b in bounds]


def _after_first(ids: np.ndarray, labels: np.ndarray, marker: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The part of a sample after the first occurrence of ``marker`` (the whole sample if absent)."""
    m = len(marker)
    for i in range(len(ids) - m + 1):
        if ids[i : i + m].tolist() == list(marker):
            return ids[i + m :], labels[i + m :]
    return ids, labels


def compare_encoded(
    path_a: str | Path, path_b: str | Path, examples: int = 5, skip_through: Sequence[int] | None = None
) -> dict:
    """Count samples whose input_ids or labels differ, with the first few indexes of each kind.

    ``skip_through`` (token ids, e.g. the end of the system turn) also counts the samples that still
    differ after the first occurrence of that marker, which separates a different default system
    prompt from differences in the conversation itself.
    """
    ids_a, lab_a, off_a = load_arrays(path_a)
    ids_b, lab_b, off_b = load_arrays(path_b)
    n = min(len(off_a), len(off_b)) - 1
    ids_differ: list[int] = []
    labels_differ: list[int] = []
    rest_differ: list[int] = []
    for i in range(n):
        a0, a1, b0, b1 = off_a[i], off_a[i + 1], off_b[i], off_b[i + 1]
        if skip_through:
            rest_a = _after_first(ids_a[a0:a1], lab_a[a0:a1], skip_through)
            rest_b = _after_first(ids_b[b0:b1], lab_b[b0:b1], skip_through)
            if not (np.array_equal(rest_a[0], rest_b[0]) and np.array_equal(rest_a[1], rest_b[1])):
                rest_differ.append(i)
        same_ids = np.array_equal(ids_a[a0:a1], ids_b[b0:b1])
        if not same_ids:
            ids_differ.append(i)
        elif not np.array_equal(lab_a[a0:a1], lab_b[b0:b1]):
            labels_differ.append(i)
    return {
        "samples_a": len(off_a) - 1,
        "samples_b": len(off_b) - 1,
        "input_ids_differ": len(ids_differ),
        "only_labels_differ": len(labels_differ),
        "first_input_ids_differ": ids_differ[:examples],
        "first_labels_differ": labels_differ[:examples],
        "differ_after_marker": len(rest_differ) if skip_through else None,
        "first_differ_after_marker": rest_differ[:examples],
    }
