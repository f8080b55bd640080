"""``run_training``: one training run, from a ``Config`` to the files in ``output_dir``, by the stage's recipe.

Each stage is one module that reads top to bottom (data, model, trainer, outputs): train/sft.py
(sft and pt), train/dpo.py, train/kto.py, train/rm.py; the steps they share are in
train/workflow.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lmforge.config import Config
from lmforge.train import dpo, kto, rm, sft
from lmforge.train.workflow import PreparedData, TrainingOutcome

if TYPE_CHECKING:
    from transformers import TrainerCallback

RECIPES = {"sft": sft.train, "pt": sft.train, "dpo": dpo.train, "kto": kto.train, "rm": rm.train}


def run_training(
    config: Config,
    *,
    callbacks: Sequence[TrainerCallback] = (),
    data: PreparedData | None = None,
) -> TrainingOutcome:
    """Train as ``config`` says; ``data`` replaces dataset loading (tests, notebooks)."""
    return RECIPES[config.finetuning.stage](config, callbacks=callbacks, data=data)
