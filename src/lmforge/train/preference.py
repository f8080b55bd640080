"""What the preference stages (dpo, kto, rm) share: a Trainer base that logs TRL's metric names, and reference log-probabilities computed once.

Each stage module (train/dpo.py, train/kto.py, train/rm.py) reads as a recipe: given the
encoded data and the loaded model it builds its reference, collator and trainer; the workflow
(train/workflow.py) keeps the output folder, resume, callbacks and saving common to all stages.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from lmforge.config import Config
from lmforge.errors import ConfigError
from lmforge.media.samples import MEDIA_COLUMN
from lmforge.model.loss import sequence_log_probs
from lmforge.train.preference_losses import LossSettings
from lmforge.train.reference import Reference
from lmforge.train.stage import StageParts
from lmforge.train.trainer import LmforgeTrainer

if TYPE_CHECKING:
    from datasets import Dataset
    from torch import nn
    from transformers import Seq2SeqTrainingArguments

logger = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


def loss_settings(config: Config) -> LossSettings:
    finetuning = config.finetuning
    return LossSettings(
        beta=finetuning.pref_beta,
        label_smoothing=finetuning.dpo_label_smoothing,
        simpo_gamma=finetuning.simpo_gamma,
    )


def preference_parts(
    config: Config,
    model: nn.Module,
    data: tuple[Dataset, Dataset | None],
    collator: Callable[[list[dict[str, Any]]], Batch],
    trainer_class: type,
    reference: Reference | None,
    **trainer_kwargs: Any,
) -> StageParts:
    """A dpo/kto stage's parts; a live reference's extra weights are dropped before the final save."""
    return StageParts(
        model=model,
        train=data[0],
        eval=data[1],
        collator=collator,
        trainer_class=trainer_class,
        trainer_kwargs={
            "settings": loss_settings(config),
            "reference": reference,
            "pref_ftx": config.finetuning.pref_ftx,
            **trainer_kwargs,
        },
        before_save=(lambda: reference.release(model)) if reference is not None else (lambda: None),
    )


class PreferenceTrainer(LmforgeTrainer):
    """LmforgeTrainer with per-batch metrics averaged into each log record (train and eval).

    Stage trainers override only ``compute_loss`` and call :meth:`record` from it. The loss
    is a mean per pair (or example), so transformers divides it by the accumulation steps.
    """

    def __init__(
        self,
        *args: Any,
        settings: LossSettings | None = None,
        reference: Reference | None = None,
        pref_ftx: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings or LossSettings()
        self.reference = reference
        self.pref_ftx = pref_ftx
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self._metrics: dict[str, dict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }

    def record(self, **values: torch.Tensor) -> None:
        """Keep this batch's metrics (names with '/' as TRL writes them: rewards_chosen -> rewards/chosen)."""
        mode = "train" if self.model.training else "eval"
        for name, value in values.items():
            mean = self.accelerator.gather_for_metrics(value.detach().float().reshape(-1)).mean()
            if not torch.isnan(mean):  # a batch without (say) undesirable examples has no mean for them
                self._metrics[mode][name.replace("_", "/", 1)].append(mean.item())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        for name, values in self._metrics[mode].items():
            logs[f"{prefix}{name}"] = round(sum(values) / len(values), 6)
        self._metrics[mode].clear()
        super().log(logs, start_time)


def precompute_reference(
    args: Seq2SeqTrainingArguments,
    reference: Reference,
    policy: nn.Module,
    collator: Callable[[list[dict[str, Any]]], Batch],
    datasets: tuple[Dataset, Dataset | None],
    values: Callable[[Batch], dict[str, torch.Tensor]],
) -> tuple[Dataset, Dataset | None]:
    """Run the reference once over each dataset, in order, keeping ``values(batch)`` as columns;
    then release it, so that nothing of the reference is held or run while training."""
    policy.to(args.device)
    was_training = policy.training
    policy.eval()
    out = [_reference_columns(d, collator, args, values) if d is not None else None for d in datasets]
    policy.train(was_training)
    reference.release(policy)
    logger.info("reference log-probabilities computed once for %d training rows", len(out[0]))
    return out[0], out[1]


def _reference_columns(
    dataset: Dataset,
    collator: Callable[[list[dict[str, Any]]], Batch],
    args: Seq2SeqTrainingArguments,
    values: Callable[[Batch], dict[str, torch.Tensor]],
) -> Dataset:
    columns: dict[str, list[float]] = defaultdict(list)
    size = args.per_device_eval_batch_size
    for start in range(0, len(dataset), size):
        batch = collator([dataset[i] for i in range(start, min(start + size, len(dataset)))])
        batch = {k: v.to(args.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        for name, value in values(batch).items():
            columns[name] += value.tolist()
    for name, value in columns.items():
        dataset = dataset.add_column(name, value)
    return dataset


def refuse_media(stage: str, *datasets: Dataset | None) -> None:
    """kto and rm train on text only this round; media samples are refused, never silently dropped."""
    if any(d is not None and MEDIA_COLUMN in d.column_names for d in datasets):
        raise ConfigError(
            f"stage {stage} does not train on images, videos or audio yet; use stage dpo or a text dataset"
        )


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the model reads from a batch: ids, mask, labels and media features (not the stage's
    own columns: ref_* log-probabilities, KTO's kl_* partners and kto_tag)."""
    return {key: value for key, value in batch.items() if not key.startswith(("ref_", "kl_", "kto_"))}


def reference_log_probs(
    reference: Reference, policy: nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's summed log-probabilities of each row's labelled tokens (and their counts)."""
    with reference.active(policy) as model:
        return sequence_log_probs(model, **model_inputs(batch))
