"""transformers' Seq2SeqTrainer with the few things lmforge adds: throughput counting and atomic checkpoints.

Everything else (optimizers, schedulers, DeepSpeed, FSDP, torchrun, resume, ``report_to``)
is transformers' own, so its keys mean what users expect.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import Seq2SeqTrainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from lmforge.data.batching import trained_tokens
from lmforge.templates.results import IGNORE_INDEX
from lmforge.train.callbacks import Throughput
from lmforge.train.sampler import LengthBucketSampler

STAGING_DIR = ".staging"  # checkpoints are written here, then renamed into output_dir


class LmforgeTrainer(Seq2SeqTrainer):
    def __init__(self, *args: Any, throughput: Throughput | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.throughput = throughput or Throughput()
        self.throughput.world_size = max(self.args.world_size, 1)
        self._staging = False

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """Length-bucketed batches (train/sampler.py) where transformers would group by length."""
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
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> Any:
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
