"""What the preference stages (dpo, kto, rm) share: a Trainer base that logs TRL's metric names, and reference log-probabilities computed once.

Each stage module (train/dpo.py, train/kto.py, train/rm.py) reads as a recipe: data, model,
reference, collator, trainer, outputs; the steps every stage shares are in train/workflow.py.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from datasets import Dataset
from peft import PeftModel
from transformers import PreTrainedModel

from lmforge.config import Config
from lmforge.errors import ConfigError
from lmforge.media.samples import MEDIA_COLUMN
from lmforge.model.loss import sequence_log_probs
from lmforge.train.preference_losses import LossSettings
from lmforge.train.reference import Reference
from lmforge.train.reference_cache import ReferenceCache
from lmforge.train.trainer import LmforgeTrainer

if TYPE_CHECKING:
    from torch import nn
    from transformers import Seq2SeqTrainingArguments

    from lmforge.model.adapter import TrainableModel
    from lmforge.train.workflow import TrainSet

logger = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


def loss_settings(config: Config) -> LossSettings:
    finetuning = config.finetuning
    return LossSettings(
        beta=finetuning.pref_beta,
        label_smoothing=finetuning.dpo_label_smoothing,
        simpo_gamma=finetuning.simpo_gamma,
    )


def release_reference(reference: Reference | None, policy: TrainableModel) -> Callable[[], None] | None:
    """What to run before the final save: drop a live reference's extra weights (None: nothing)."""
    if reference is None:
        return None
    return lambda: reference.release(policy)


def whole_dataset(dataset: TrainSet, stage: str) -> Dataset:
    """``dataset`` as a map-style Dataset: the reference pass and KTO's partners need every row at once."""
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"stage {stage} needs the whole dataset at once; set streaming: false")
    return dataset


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

    def policy(self, model: nn.Module) -> TrainableModel:
        """The trained model inside accelerate's wrappers (DDP, ...): a transformers or PEFT model."""
        policy = self.accelerator.unwrap_model(model)
        if not isinstance(policy, PreTrainedModel | PeftModel):
            raise TypeError(
                f"preference training needs a transformers or PEFT model, not {type(policy).__name__}"
            )
        return policy

    def live_reference(self) -> Reference:
        """The reference to run now; none is held when its log-probabilities were precomputed."""
        if self.reference is None:
            raise RuntimeError("no reference model is held: its log-probabilities should be in the batch")
        return self.reference

    def record(self, **values: torch.Tensor) -> None:
        """Keep this batch's metrics (names with '/' as TRL writes them: rewards_chosen -> rewards/chosen)."""
        mode = "eval" if self.model is not None and not self.model.training else "train"
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
    make_reference: Callable[[], Reference],
    policy: TrainableModel,
    collator: Callable[[list[dict[str, Any]]], Batch],
    datasets: tuple[Dataset, Dataset | None],
    values: Callable[[Reference, Batch], dict[str, torch.Tensor]],
    cache: ReferenceCache | None = None,
) -> tuple[Dataset, Dataset | None]:
    """Each dataset with ``values(reference, batch)`` as columns, from ``cache`` where it holds them;
    otherwise the reference (``make_reference()``, built only then) runs once over the dataset, in
    order, and is released, so that nothing of it is held or run while training."""
    found = [cache.load(d) if cache is not None and d is not None else None for d in datasets]
    missing = [(i, d) for i, d in enumerate(datasets) if d is not None and found[i] is None]
    if missing:
        reference = make_reference()
        policy.to(args.device)  # type: ignore[arg-type]  # transformers' decorator on PreTrainedModel.to hides its signature
        was_training = policy.training
        policy.eval()
        for i, dataset in missing:
            columns = _reference_columns(dataset, collator, args, lambda b: values(reference, b))
            if cache is not None and args.should_save:  # one process writes the entry
                cache.store(dataset, columns)
            found[i] = columns
        policy.train(was_training)
        reference.release(policy)
        rows = sum(len(dataset) for _, dataset in missing)
        logger.info("reference log-probabilities computed once for %d rows", rows)
    train = _with_columns(datasets[0], found[0])
    eval_set = _with_columns(datasets[1], found[1]) if datasets[1] is not None else None
    return train, eval_set


def _with_columns(dataset: Dataset, columns: dict[str, list[float]] | None) -> Dataset:
    for name, column in (columns or {}).items():
        dataset = dataset.add_column(name, column)
    return dataset


def _reference_columns(
    dataset: Dataset,
    collator: Callable[[list[dict[str, Any]]], Batch],
    args: Seq2SeqTrainingArguments,
    values: Callable[[Batch], dict[str, torch.Tensor]],
) -> dict[str, list[float]]:
    columns: dict[str, list[float]] = defaultdict(list)
    size = args.per_device_eval_batch_size
    for start in range(0, len(dataset), size):
        batch = collator([dataset[i] for i in range(start, min(start + size, len(dataset)))])
        batch = {k: v.to(args.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        for name, value in values(batch).items():
            columns[name] += value.tolist()
    return dict(columns)


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
    reference: Reference, policy: TrainableModel, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's summed log-probabilities of each row's labelled tokens (and their counts)."""
    with reference.active(policy) as model:
        return sequence_log_probs(model, **model_inputs(batch))
