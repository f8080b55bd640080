"""Length-bucketed sampling for unpacked training: batches of similar lengths, in random order.

transformers' ``LengthGroupedSampler`` sorts within mega-batches of at most 50 batches and at
least 4 mega-batches per epoch, so on a small or medium dataset its groups are small and much
of each batch is still padding (alpaca_en_demo[:100], batch 4: 29% of the computed tokens).
Here samples are sorted within buckets of ``bucket_batches`` batches, each bucket is cut into
batches, and the order of all batches is shuffled: every batch holds samples of similar length,
while which batch comes when stays random. The batch holding the longest sample goes first,
so an out-of-memory error shows at step 1, not hours in.

The order depends only on ``seed`` and the epoch (``set_epoch``, called by the trainer), so a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

DEFAULT_BUCKET_BATCHES = 64


def length_bucketed_order(
    lengths: Sequence[int],
    batch_size: int,
    generator: torch.Generator,
    bucket_batches: int = DEFAULT_BUCKET_BATCHES,
) -> list[int]:
    """Sample indices in batch order: each run of ``batch_size`` consecutive indices has similar lengths."""
    count = len(lengths)
    if count == 0:
        return []
    batch_size = max(1, batch_size)
    bucket = max(batch_size, batch_size * bucket_batches)
    shuffled = torch.randperm(count, generator=generator).tolist()
    batches: list[list[int]] = []
    for start in range(0, count, bucket):
        members = sorted(shuffled[start : start + bucket], key=lambda i: lengths[i], reverse=True)
        batches.extend(members[i : i + batch_size] for i in range(0, len(members), batch_size))
    order = torch.randperm(len(batches), generator=generator).tolist()
    batches = [batches[i] for i in order]
    longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
    batches[0], batches[longest] = batches[longest], batches[0]
    return [i for batch in batches for i in batch]


class LengthBucketSampler(Sampler[int]):
    """Yields :func:`length_bucketed_order` for the current epoch."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(length_bucketed_order(self.lengths, self.batch_size, generator))


def padded_tokens(lengths: Sequence[int], order: Sequence[int], batch_size: int) -> int:
    """Tokens a right-padded batching of ``order`` computes (real plus padding): what bucketing saves."""
    total = 0
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        total += max(lengths[i] for i in batch) * len(batch)
    return total
