"""What a training stage hands to the workflow: its model, data, collator and trainer class.

Each stage module (train/dpo.py, train/kto.py, train/rm.py) reads as a recipe: given the
encoded data and the loaded model it builds its reference, collator and trainer; the workflow
(train/workflow.py) keeps the output folder, resume, callbacks and saving common to all stages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from torch import nn

PREFERENCE_STAGES = ("dpo", "kto", "rm")


@dataclass
class StageParts:
    """A stage's model, data, collator and trainer class, as the workflow runs them."""

    model: nn.Module
    train: Dataset
    eval: Dataset | None
    collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]
    trainer_class: type
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    before_save: Callable[[], None] = lambda: None  # e.g. drop the frozen reference adapter
