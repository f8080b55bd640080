"""Which records are used, how datasets are mixed, and the validation split.

Order follows LLaMA-Factory: ``num_samples`` (from ``dataset_info.json``) draws a seeded
random subset of a dataset (with repeats when it asks for more than there are), then
``max_samples`` keeps the first N of what is left, then the datasets are mixed, then
``val_size`` splits off the evaluation set.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lmforge.errors import ConfigError


def select_indices(
    total: int, num_samples: int | None, max_samples: int | None, seed: int
) -> list[int] | range:
    """Record indices to encode, in order."""
    indices: list[int] | range = range(total)
    if num_samples is not None:
        rng = np.random.default_rng(seed)
        chosen = rng.permutation(total)[:num_samples]
        if num_samples > total:
            chosen = np.concatenate([chosen, rng.choice(total, num_samples - total)])
        indices = chosen.tolist()
    if max_samples is not None:
        indices = indices[:max_samples]
    return indices


def mix(parts: list[Any], strategy: str, probs: list[float] | None, seed: int) -> Any:
    """One dataset from several: ``concat``, or interleaved until the first (``_under``) or last (``_over``) runs out."""
    if len(parts) == 1:
        return parts[0]
    import datasets

    if strategy == "concat":
        return datasets.concatenate_datasets(parts)
    if probs is not None:
        if len(probs) != len(parts):
            raise ConfigError(
                f"config key 'interleave_probs' has {len(probs)} values for {len(parts)} datasets; give one per dataset"
            )
        if not math.isclose(sum(probs), 1.0, rel_tol=1e-6):
            raise ConfigError(f"config key 'interleave_probs' must sum to 1, got {sum(probs):g}")
    stopping = "first_exhausted" if strategy == "interleave_under" else "all_exhausted"
    return datasets.interleave_datasets(parts, probabilities=probs, seed=seed, stopping_strategy=stopping)


def eval_count(total: int, val_size: float) -> int:
    """How many samples ``val_size`` (a fraction below 1, or a count) asks for."""
    count = math.ceil(val_size * total) if val_size < 1 else int(val_size)
    if count >= total:
        raise ConfigError(
            f"config key 'val_size' ({val_size:g}) leaves no training samples out of {total}; lower it"
        )
    return count


def split_eval(dataset: Any, val_size: float, seed: int) -> tuple[Any, Any]:
    """``(train, eval)``: a seeded random ``val_size`` of the samples goes to eval."""
    n_eval = eval_count(len(dataset), val_size)
    if n_eval == 0:
        return dataset, None
    order = np.random.default_rng(seed).permutation(len(dataset))
    eval_indices = np.sort(order[:n_eval])
    train_indices = np.sort(order[n_eval:])
    return dataset.select(train_indices), dataset.select(eval_indices)
