"""Stages sft and pt: the model's own causal-LM loss (computed in chunks) on padded or packed samples.

Recipe: the encoded samples (data/: ``input_ids``, ``labels``; pt trains every token and cuts
long documents into windows), packed or given their length column (train/workflow.py), the model
with LoRA, freeze or full training, the chunked cross-entropy swapped into its forward
(model/loss.py), a collator that pads (or turns packed rows into restarting positions), and
lmforge's Trainer (train/trainer.py); the workflow writes the outputs.

A sample's path through train/ and model/: ``load_data`` and ``arrange`` (train/workflow.py;
data/ reads and encodes it), the length-bucketed batch order, collation (data/collator.py) and
the step that counts it (train/trainer.py), the loss (model/loss.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from lmforge.config import Config
from lmforge.data.batching import TrainingCollator
from lmforge.model.loss import enable_chunked_loss
from lmforge.train.trainer import LmforgeTrainer
from lmforge.train.workflow import (
    PreparedData,
    TrainingOutcome,
    arrange,
    chunked_loss_allowed,
    finish,
    load_data,
    load_training_model,
    packing_enabled,
    start,
    trainer_inputs,
)

if TYPE_CHECKING:
    from transformers import TrainerCallback


def train(
    config: Config, *, callbacks: Sequence[TrainerCallback] = (), data: PreparedData | None = None
) -> TrainingOutcome:
    """Train stage sft or pt as ``config`` says; ``data`` replaces dataset loading."""
    run = start(config, callbacks)
    prepared = load_data(run, data)
    if prepared is None:  # tokenized_path: this run only encodes
        return TrainingOutcome(run.output_dir)
    train_set, eval_set = arrange(run, prepared)

    model = load_training_model(run, train_set)
    run.chunked_loss = chunked_loss_allowed(run) and enable_chunked_loss(model)

    packing = packing_enabled(config)
    collator = TrainingCollator(
        media=run.media,
        pad_token_id=run.tokenizer.pad_token_id,
        pad_to_multiple_of=8 if torch.cuda.is_available() and not packing else None,
        flatten=packing and getattr(model.config, "_attn_implementation", "") == "flash_attention_2",
    )
    trainer = LmforgeTrainer(**trainer_inputs(run, model, train_set, eval_set, collator))
    return finish(run, trainer)
