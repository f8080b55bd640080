"""Stage kto: training on single answers marked desirable or not (``kto_tag``), KTO's loss.

Recipe: encoded examples (data/: ``input_ids``, ``labels``, ``prompt_length``, ``kto_tag``);
each gets a mismatched partner, its own prompt followed by another example's answer, whose
policy/reference log-ratio estimates KTO's reference point (the KL term, as the KTO paper and
TRL do); the reference by train/reference.py (or computed once up front); a collator that pads
the examples and their partners; a trainer whose loss is ``kto_loss``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lmforge.config import Config
from lmforge.data.batching import TrainingCollator
from lmforge.errors import DataError
from lmforge.model.loss import sequence_log_probs
from lmforge.templates.results import IGNORE_INDEX
from lmforge.train.preference_losses import kto_loss, sft_term
from lmforge.train.preference_trainer import (
    PreferenceTrainer,
    loss_settings,
    precompute_reference,
    reference_log_probs,
    refuse_media,
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
    from datasets import Dataset
    from torch import nn
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

    from lmforge.model.adapter import TrainableModel

logger = logging.getLogger(__name__)

KTO_READS = ("input_ids", "labels", "kl_input_ids", "kl_labels")  # what the reference passes read


def train(
    config: Config, *, callbacks: Sequence[TrainerCallback] = (), data: PreparedData | None = None
) -> TrainingOutcome:
    """Train stage kto as ``config`` says; ``data`` replaces dataset loading."""
    run = start(config, callbacks)
    prepared = load_data(run, data)
    if prepared is None:  # tokenized_path: this run only encodes
        return TrainingOutcome(run.output_dir)
    refuse_media(config.finetuning.stage, prepared.train, prepared.eval)
    train_set, eval_set = arrange(run, prepared)
    cutoff, seed = config.data.cutoff_len, run.args.seed
    train_set = add_mismatched_partners(whole_dataset(train_set, "kto"), cutoff, seed=seed)
    if eval_set is not None:
        eval_set = add_mismatched_partners(whole_dataset(eval_set, "kto"), cutoff, seed=seed)

    model = load_training_model(run, train_set)
    run.chunked_loss = chunked_loss_allowed(run)  # sequence_log_probs projects in chunks itself

    collator = KTOCollator(pad_token_id=run.tokenizer.pad_token_id)
    live: Reference | None = None
    if (
        config.finetuning.precompute_ref_log_probs
    ):  # then released: nothing of the reference is held while training
        train_set, eval_set = precompute_partner_reference(
            config, run.args, model, collator, (train_set, eval_set)
        )
    else:
        live = build_reference(config, model, model.dtype)
    trainer = KTOTrainer(
        **trainer_inputs(run, model, train_set, eval_set, collator),
        settings=loss_settings(config),
        reference=live,
        pref_ftx=config.finetuning.pref_ftx,
        weights=(config.finetuning.kto_chosen_weight, config.finetuning.kto_rejected_weight),
    )
    return finish(run, trainer, before_save=release_reference(live, model))


def precompute_partner_reference(
    config: Config,
    args: Seq2SeqTrainingArguments,
    model: TrainableModel,
    collator: KTOCollator,
    datasets: tuple[Dataset, Dataset | None],
) -> tuple[Dataset, Dataset | None]:
    """The reference's log-probabilities of each example and of its partner, as columns (from the
    cache when this reference already ran over these examples and partners)."""

    def ref_columns(reference: Reference, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            "ref_logps": reference_log_probs(reference, model, batch)[0],
            "ref_kl_logps": reference_log_probs(reference, model, partner_batch(batch))[0],
        }

    cache = ReferenceCache.for_run(config, model.dtype, stage="kto", reads=KTO_READS)
    return precompute_reference(
        args,
        lambda: build_reference(config, model, model.dtype),
        model,
        collator,
        datasets,
        ref_columns,
        cache,
    )


def add_mismatched_partners(dataset: Dataset, cutoff_len: int, *, seed: int) -> Dataset:
    """Columns ``kl_input_ids``/``kl_labels``: example i's prompt followed by another example's answer.

    Partners follow one seeded cycle through the dataset (each answer is used once), so the
    pairing is fixed and reference log-probabilities of partners can be precomputed. The
    partner is cut to ``cutoff_len`` from its end.
    """
    count = len(dataset)
    if count < 2:
        raise DataError("KTO needs at least two examples (the KL term pairs prompts with other answers)")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    partner = {order[k]: order[(k + 1) % count] for k in range(count)}
    ids, labels, lengths = dataset["input_ids"], dataset["labels"], dataset["prompt_length"]

    def mismatched(i: int) -> tuple[list[int], list[int]]:
        j = partner[i]
        prompt = list(ids[i][: lengths[i]])
        row_ids = (prompt + list(ids[j][lengths[j] :]))[:cutoff_len]
        row_labels = ([IGNORE_INDEX] * len(prompt) + list(labels[j][lengths[j] :]))[:cutoff_len]
        return row_ids, row_labels

    pairs = [mismatched(i) for i in range(count)]
    return dataset.add_column("kl_input_ids", [p[0] for p in pairs]).add_column(
        "kl_labels", [p[1] for p in pairs]
    )


@dataclass
class KTOCollator:
    """Examples and their mismatched partners, each right-padded; ``kto_tag`` as a bool tensor.

    >>> collate = KTOCollator(pad_token_id=0)
    >>> batch = collate([{"input_ids": [5, 6], "labels": [-100, 6], "kto_tag": True,
    ...                   "kl_input_ids": [5, 9, 9], "kl_labels": [-100, 9, 9]}])
    >>> batch["input_ids"].tolist(), batch["kl_input_ids"].tolist(), batch["kto_tag"].tolist()
    ([[5, 6]], [[5, 9, 9]], [True])
    """

    pad_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pad = TrainingCollator(pad_token_id=self.pad_token_id)
        batch = pad([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features])
        partners = pad([{"input_ids": f["kl_input_ids"], "labels": f["kl_labels"]} for f in features])
        batch.update({f"kl_{key}": value for key, value in partners.items()})
        batch["kto_tag"] = torch.tensor([bool(f["kto_tag"]) for f in features])
        for column in ("ref_logps", "ref_kl_logps"):
            if column in features[0]:
                batch[column] = torch.tensor([f[column] for f in features], dtype=torch.float32)
        return batch


def partner_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: batch[f"kl_{key}"] for key in ("input_ids", "attention_mask", "labels")}


class KTOTrainer(PreferenceTrainer):
    def __init__(self, *args: Any, weights: tuple[float, float] = (1.0, 1.0), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.weights = weights

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        policy = self.policy(model)
        logps, tokens = sequence_log_probs(
            policy, inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
        )
        partners = partner_batch(inputs)
        with torch.no_grad():  # the reference point carries no gradient
            kl_logps, _ = sequence_log_probs(
                policy, partners["input_ids"], partners["attention_mask"], partners["labels"]
            )
        if "ref_logps" in inputs:
            ref_logps, ref_kl_logps = inputs["ref_logps"], inputs["ref_kl_logps"]
        else:
            ref_logps, _ = reference_log_probs(self.live_reference(), policy, inputs)
            ref_kl_logps, _ = reference_log_probs(self.live_reference(), policy, partners)
        kl = self.accelerator.gather_for_metrics((kl_logps - ref_kl_logps).mean().reshape(1)).mean()
        desirable = inputs["kto_tag"]
        logratios = logps - ref_logps
        losses = kto_loss(logratios[desirable], logratios[~desirable], kl, self.settings, *self.weights)
        loss = losses.mean()
        if self.pref_ftx and desirable.any():
            loss = loss + self.pref_ftx * sft_term(logps[desirable], tokens[desirable]).mean()
        rewards = self.settings.beta * logratios.detach()
        self.record(
            rewards_chosen=rewards[desirable],
            rewards_rejected=rewards[~desirable],
            rewards_margins=rewards[desirable].mean() - rewards[~desirable].mean(),
            logps_chosen=logps.detach()[desirable],
            logps_rejected=logps.detach()[~desirable],
            kl=kl.clamp(min=0),
        )
        return (loss, {"loss": loss}) if return_outputs else loss
