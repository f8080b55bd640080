"""``lmforge train``: every stage (sft, pt, dpo, kto, rm) on transformers' Trainer.

The names below load on first use, so ``lmforge.train.launch`` (the torchrun relaunch) and a
prediction-only ``lmforge train`` run do not import torch, transformers and peft.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmforge.train.stages import run_training
    from lmforge.train.workflow import PreparedData, TrainingOutcome

__all__ = ["PreparedData", "TrainingOutcome", "run_training"]

_HOMES = {"run_training": "stages", "PreparedData": "workflow", "TrainingOutcome": "workflow"}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'lmforge.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lmforge.train.{_HOMES[name]}"), name)
