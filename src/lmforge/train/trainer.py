"""transformers' Seq2SeqTrainer with the few things lmforge adds: length-bucketed batches, counting
the trained tokens and samples of each batch (``Throughput``), and atomic checkpoints.

Everything else (optimizers, schedulers, DeepSpeed, FSDP, torchrun, resume, ``report_to``)
is transformers' own, so its keys mean what users expect. Three of transformers' private methods
are overridden (``_get_train_sampler``, ``_get_output_dir``, ``_save_checkpoint``: it has no
public hook for a sampler or for where a checkpoint is written), so pyproject.toml pins the
transformers minor release these were tested with.

Length-bucketed batches, for unpacked training:

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

import contextlib
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler
from transformers import Seq2SeqTrainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from lmforge.data.batching import trained_tokens
from lmforge.templates.results import IGNORE_INDEX

STAGING_DIR = ".staging"  # checkpoints are written here, then renamed into output_dir


@dataclass
class Throughput:
    """Trained tokens and samples seen by this process since training began."""

    tokens: int = 0
    samples: int = 0
    started: float = field(default_factory=time.perf_counter)
    world_size: int = 1
    flops_per_token: float = 0.0  # model FLOPs per trained token, from the estimate (0: unknown)
    peak_flops: float = 0.0  # the measured matmul rate of the training dtype, FLOP/s per process

    def tokens_per_second(self) -> float:
        """Across all processes (each sees about the same share)."""
        elapsed = time.perf_counter() - self.started
        return self.tokens * self.world_size / elapsed if elapsed > 0 else 0.0

    def mfu(self, tokens_per_second: float | None = None) -> float | None:
        """Model FLOPs utilisation: the model's FLOPs done per second over the matmul peak (0..1)."""
        if not self.flops_per_token or not self.peak_flops:
            return None
        rate = self.tokens_per_second() if tokens_per_second is None else tokens_per_second
        return rate * self.flops_per_token / (self.peak_flops * self.world_size)


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


class LmforgeTrainer(Seq2SeqTrainer):
    def __init__(self, *args: Any, throughput: Throughput | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.throughput = throughput or Throughput()
        self.throughput.world_size = max(self.args.world_size, 1)
        self._staging = False

    def _get_train_sampler(self, train_dataset: TorchDataset | None = None) -> Sampler[int] | None:
        """Length-bucketed batches (above) where transformers would group by length."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        column = self.args.length_column_name
        if (
            self.args.train_sampling_strategy == "group_by_length"
            and dataset is not None
            and column in getattr(dataset, "column_names", ())
        ):
            batch_size = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthBucketSampler(dataset[column], batch_size, seed=self.args.seed)
        return super()._get_train_sampler(train_dataset)

    def training_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        self.throughput.tokens += trained_tokens(inputs)
        self.throughput.samples += trained_samples(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    # -- checkpoints: written under output_dir/.staging, then renamed, so a kill never leaves half of one
    def _get_output_dir(self, trial: Any) -> str:
        base = super()._get_output_dir(trial)
        return os.path.join(base, STAGING_DIR) if self._staging else base

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        run_dir = Path(self._get_output_dir(trial))
        staging = run_dir / STAGING_DIR
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = False
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            final = run_dir / name
            if self.state.best_model_checkpoint and Path(self.state.best_model_checkpoint) == staging / name:
                self.state.best_model_checkpoint = str(final)
                self.state.save_to_json(str(staging / name / "trainer_state.json"))
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging / name, final)
            _remove_if_empty(staging)
            rotate_checkpoints(
                output_dir=str(run_dir),
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,
            )
        self.accelerator.wait_for_everyone()

    def global_count(self, value: int) -> int:
        """Sum a per-process count over all processes."""
        if self.args.world_size <= 1:
            return value
        tensor = torch.tensor([value], device=self.args.device, dtype=torch.long)
        return int(self.accelerator.reduce(tensor, reduction="sum").item())


def trained_samples(batch: dict[str, torch.Tensor]) -> int:
    """Sequences in the batch with at least one trained token (packed rows count each sample)."""
    labels = batch["labels"]
    trained = torch.nn.functional.pad(labels[..., 1:] != IGNORE_INDEX, (1, 0), value=False)
    if "position_ids" not in batch:
        return int(trained.any(dim=-1).sum())
    segments = (batch["position_ids"] == 0).long().cumsum(dim=-1)  # sample index within each row
    rows = torch.arange(labels.shape[0], device=labels.device)[:, None].expand_as(segments)
    keys = rows * (labels.shape[-1] + 1) + segments
    return int(torch.unique(keys[trained]).numel())


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: a process left files; keep them for inspection
        folder.rmdir()
