"""Stage dpo: pairwise preference training (``pref_loss`` sigmoid, hinge, ipo, orpo, simpo).

Recipe: pairs of encoded answers (data/), the policy model (LoRA, freeze or full), the
reference by the rules of train/reference.py (none for orpo/simpo; computed once up front with
``precompute_ref_log_probs``), then a collator that stacks chosen and rejected rows into one
batch so both go through ONE forward pass, and a trainer whose loss is one function of
per-sequence log-probabilities (train/preference_losses.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lmforge.config import Config
from lmforge.data.batching import TrainingCollator
from lmforge.data.preference import PAIR_COLUMNS
from lmforge.media.samples import MEDIA_COLUMN
from lmforge.model.loss import sequence_log_probs
from lmforge.train.preference_losses import PAIR_LOSSES, sft_term
from lmforge.train.preference_trainer import (
    PreferenceTrainer,
    loss_settings,
    model_inputs,
    precompute_reference,
    reference_log_probs,
    release_reference,
    whole_dataset,
)
from lmforge.train.reference import Reference, build_reference
from lmforge.train.reference_cache import ReferenceCache
from lmforge.train.workflow import (
    PreparedData,
    TrainingOutcome,
    arrange,
    chunked_loss_allowed,
    finish,
    load_data,
    load_training_model,
    start,
    trainer_inputs,
)

if TYPE_CHECKING:
    from torch import nn
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

    from lmforge.media.inputs import MediaProcessing
    from lmforge.model.adapter import TrainableModel
    from lmforge.train.workflow import TrainSet

logger = logging.getLogger(__name__)

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


def train(
    config: Config, *, callbacks: Sequence[TrainerCallback] = (), data: PreparedData | None = None
) -> TrainingOutcome:
    """Train stage dpo as ``config`` says; ``data`` replaces dataset loading."""
    run = start(config, callbacks)
    prepared = load_data(run, data)
    if prepared is None:  # tokenized_path: this run only encodes
        return TrainingOutcome(run.output_dir)
    train_set, eval_set = arrange(run, prepared)

    model = load_training_model(run, train_set)
    run.chunked_loss = chunked_loss_allowed(run)  # sequence_log_probs projects in chunks itself

    collator = PairwiseCollator(pad_token_id=run.tokenizer.pad_token_id, media=run.media)
    reference, (train_set, eval_set) = pair_reference(
        config, run.args, model, collator, (train_set, eval_set)
    )
    trainer = DPOTrainer(
        **trainer_inputs(run, model, train_set, eval_set, collator),
        settings=loss_settings(config),
        reference=reference,
        pref_ftx=config.finetuning.pref_ftx,
        pref_loss=config.finetuning.pref_loss,
    )
    return finish(run, trainer, before_save=release_reference(reference, model))


def pair_reference(
    config: Config,
    args: Seq2SeqTrainingArguments,
    model: TrainableModel,
    collator: PairwiseCollator,
    datasets: tuple[TrainSet, TrainSet | None],
) -> tuple[Reference | None, tuple[TrainSet, TrainSet | None]]:
    """The reference to run while training (none for orpo/simpo), or none and the datasets with its
    log-probabilities as columns (``precompute_ref_log_probs``; read from the cache when this
    reference already ran over this data, train/reference_cache.py)."""
    if not PAIR_LOSSES[config.finetuning.pref_loss].uses_reference:
        return None, datasets
    if not config.finetuning.precompute_ref_log_probs:
        return build_reference(config, model, model.dtype), datasets

    def ref_columns(reference: Reference, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(zip(REF_COLUMNS, reference_log_probs(reference, model, batch)[0].chunk(2), strict=True))

    train_set = whole_dataset(datasets[0], "dpo")
    eval_set = whole_dataset(datasets[1], "dpo") if datasets[1] is not None else None
    cache = ReferenceCache.for_run(config, model.dtype, stage="dpo", reads=(*PAIR_COLUMNS, MEDIA_COLUMN))
    return None, precompute_reference(
        args,
        lambda: build_reference(config, model, model.dtype),
        model,
        collator,
        (train_set, eval_set),
        ref_columns,
        cache,
    )


@dataclass
class PairwiseCollator:
    """Pairs into one batch: every chosen row, then every rejected row, right-padded to one length.

    >>> collate = PairwiseCollator(pad_token_id=0)
    >>> batch = collate([{"chosen_input_ids": [5, 6, 7], "chosen_labels": [-100, 6, 7],
    ...                   "rejected_input_ids": [5, 8], "rejected_labels": [-100, 8]}])
    >>> batch["input_ids"].tolist(), batch["labels"].tolist()
    ([[5, 6, 7], [5, 8, 0]], [[-100, 6, 7], [-100, 8, -100]])

    Precomputed reference log-probabilities (``ref_chosen_logps``/``ref_rejected_logps``)
    become ``ref_logps`` in the same order. A multimodal model's pairs keep their media: both
    rows of a pair carry the prompt's pictures (``media`` is the model's MediaProcessing).
    """

    pad_token_id: int
    media: MediaProcessing | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [
            {"input_ids": f[f"{side}_input_ids"], "labels": f[f"{side}_labels"]}
            | ({MEDIA_COLUMN: f[MEDIA_COLUMN]} if MEDIA_COLUMN in f else {})
            for side in ("chosen", "rejected")
            for f in features
        ]
        batch = TrainingCollator(pad_token_id=self.pad_token_id, media=self.media)(rows)
        if REF_COLUMNS[0] in features[0]:
            batch["ref_logps"] = torch.tensor(
                [f[column] for column in REF_COLUMNS for f in features], dtype=torch.float32
            )
        return batch


class DPOTrainer(PreferenceTrainer):
    def __init__(self, *args: Any, pref_loss: str = "sigmoid", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pair_loss = PAIR_LOSSES[pref_loss]

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        policy = self.policy(model)
        logps, tokens = sequence_log_probs(policy, **model_inputs(inputs))
        scores = logps
        if self.pair_loss.uses_reference:
            ref_logps = inputs.get("ref_logps")
            if ref_logps is None:
                ref_logps, _ = reference_log_probs(self.live_reference(), policy, inputs)
            scores = logps - ref_logps
        if self.pair_loss.length_normalised:
            scores = scores / tokens.clamp(min=1)
        chosen, rejected = scores.chunk(2)
        losses = self.pair_loss.fn(chosen, rejected, self.settings)
        if self.pref_ftx:
            losses = losses + self.pref_ftx * sft_term(*(t.chunk(2)[0] for t in (logps, tokens)))
        rewards_chosen, rewards_rejected = (
            self.settings.beta * chosen.detach(),
            self.settings.beta * rejected.detach(),
        )
        logps_chosen, logps_rejected = logps.detach().chunk(2)
        self.record(
            rewards_chosen=rewards_chosen,
            rewards_rejected=rewards_rejected,
            rewards_accuracies=(rewards_chosen > rewards_rejected).float(),
            rewards_margins=rewards_chosen - rewards_rejected,
            logps_chosen=logps_chosen,
            logps_rejected=logps_rejected,
        )
        loss = losses.mean()
        return (loss, {"loss": loss}) if return_outputs else loss
