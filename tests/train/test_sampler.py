"""Length-bucketed sampling: a permutation, homogeneous batches, random batch order, resumable."""

from __future__ import annotations

import random

import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

from lmforge.train.trainer import LengthBucketSampler, length_bucketed_order, padded_tokens


def lengths(count: int = 500, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(20, 1024) for _ in range(count)]


def test_order_is_a_permutation_with_the_longest_batch_first() -> None:
    sizes = lengths(101)  # not a multiple of the batch size
    order = length_bucketed_order(sizes, 4, torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(101))
    assert max(sizes[i] for i in order[:4]) == max(sizes)


def test_batches_hold_similar_lengths_and_pad_less_than_transformers_grouping() -> None:
    sizes = lengths(400)
    ours = length_bucketed_order(sizes, 4, torch.Generator().manual_seed(1))
    theirs = get_length_grouped_indices(sizes, 4, generator=torch.Generator().manual_seed(1))
    shuffled = list(range(400))
    random.Random(1).shuffle(shuffled)
    real = sum(sizes)
    assert padded_tokens(sizes, ours, 4) < padded_tokens(sizes, theirs, 4) < padded_tokens(sizes, shuffled, 4)
    assert padded_tokens(sizes, ours, 4) < 1.05 * real


def test_batch_order_is_random_not_sorted() -> None:
    sizes = lengths(400)
    order = length_bucketed_order(sizes, 4, torch.Generator().manual_seed(2))
    maxima = [max(sizes[i] for i in order[k : k + 4]) for k in range(4, 400, 4)]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_sampler_depends_only_on_seed_and_epoch() -> None:
    sizes = lengths(200)
    first, again = LengthBucketSampler(sizes, 8, seed=3), LengthBucketSampler(sizes, 8, seed=3)
    assert list(first) == list(again)  # a resumed run rebuilds the same order
    first.set_epoch(1)
    assert list(first) != list(again)
    again.set_epoch(1)
    assert list(first) == list(again)
    assert len(first) == 200


def test_empty_dataset_gives_no_indices() -> None:
    assert length_bucketed_order([], 4, torch.Generator().manual_seed(0)) == []
