"""Stage rm: a reward model, a scalar score head trained on pairs with ``-log sigmoid(r_chosen - r_rejected)``.

Recipe: the same encoded pairs as dpo (data/); the model loaded as transformers'
``AutoModelForSequenceClassification`` with one label (the workflow does this for stage rm),
LoRA on top with the score head in ``modules_to_save``; the pairwise collator of train/dpo.py;
a trainer whose loss is ``pairwise_reward_loss``.

The score is the model's own: the head applied at the last token that is not padding, as
transformers' sequence classifiers pool. The output folder is therefore what the ecosystem
loads without lmforge: a full model is a ``*ForSequenceClassification`` checkpoint with
``num_labels: 1``; a LoRA run is a PEFT adapter (task type SEQ_CLS) whose score head is saved
with it, loaded by ``AutoPeftModelForSequenceClassification`` or ``PeftModel.from_pretrained``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from lmforge.config import Config
from lmforge.errors import ConfigError
from lmforge.train.dpo import PairwiseCollator
from lmforge.train.preference_losses import pairwise_reward_loss
from lmforge.train.preference_trainer import PreferenceTrainer, refuse_media
from lmforge.train.workflow import (
    PreparedData,
    TrainingOutcome,
    arrange,
    finish,
    load_data,
    load_training_model,
    start,
    trainer_inputs,
)

if TYPE_CHECKING:
    from torch import nn
    from transformers import TrainerCallback


def train(
    config: Config, *, callbacks: Sequence[TrainerCallback] = (), data: PreparedData | None = None
) -> TrainingOutcome:
    """Train stage rm as ``config`` says; ``data`` replaces dataset loading."""
    run = start(config, callbacks)
    prepared = load_data(run, data)
    if prepared is None:  # tokenized_path: this run only encodes
        return TrainingOutcome(run.output_dir)
    refuse_media(config.finetuning.stage, prepared.train, prepared.eval)
    train_set, eval_set = arrange(run, prepared)

    model = load_training_model(run, train_set)  # *ForSequenceClassification, one label
    if not type(getattr(model, "get_base_model", lambda: model)()).__name__.endswith(
        "ForSequenceClassification"
    ):
        raise ConfigError(
            f"stage rm: {config.model.model_name_or_path} has no sequence-classification form in transformers"
        )

    collator = PairwiseCollator(pad_token_id=run.tokenizer.pad_token_id)
    trainer = RewardTrainer(**trainer_inputs(run, model, train_set, eval_set, collator))
    return finish(run, trainer)


def answer_scores(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One score per row: the model's head at the row's last non-padding token."""
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).logits
    return logits.squeeze(-1).float()


class RewardTrainer(PreferenceTrainer):
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        chosen, rejected = answer_scores(model, inputs).chunk(2)
        loss = pairwise_reward_loss(chosen, rejected).mean()
        self.record(
            rewards_chosen=chosen.detach(),
            rewards_rejected=rejected.detach(),
            rewards_accuracies=(chosen > rejected).float().detach(),
            rewards_margins=(chosen - rejected).detach(),
        )
        return (loss, {"loss": loss}) if return_outputs else loss
