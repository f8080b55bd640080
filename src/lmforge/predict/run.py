"""``do_predict``: which kind of prediction a config asks for, on which model, into which folder.

``predict_with_generate: true`` generates replies and scores them (:mod:`.generate`);
``false`` measures loss and perplexity on the references (:mod:`.perplexity`); ``stage: rm``
scores the chosen and rejected answer of each eval pair (:mod:`.rewards`). After training in
the same run, the model predicted with is the one just trained: the adapter saved in
``output_dir`` on top of the base model (LoRA), or the full model saved there.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from lmforge.config import Config
from lmforge.errors import ConfigError


def wants_prediction(config: Config) -> bool:
    return bool(config.training_kwargs.get("do_predict"))


def predicts_only(config: Config) -> bool:
    """``do_predict`` without ``do_train``: LLaMA-Factory's prediction configs train nothing."""
    return wants_prediction(config) and not config.training_kwargs.get("do_train")


def is_main_process() -> bool:
    """Under torchrun only rank 0 predicts, after every rank has finished training."""
    return os.environ.get("RANK", "0") == "0"


def trained_config(config: Config, output_dir: Path) -> Config:
    """The config with the model just trained in ``output_dir`` in place of the one trained from."""
    if config.finetuning.finetuning_type == "lora":
        model = dataclasses.replace(config.model, adapter_name_or_path=[str(output_dir)])
    else:
        model = dataclasses.replace(
            config.model, model_name_or_path=str(output_dir), adapter_name_or_path=None
        )
    return dataclasses.replace(config, model=model)


def run_prediction(config: Config) -> dict[str, Any]:
    """Predict as the config says; prints a table of the metrics and returns them."""
    output_dir = config.training_kwargs.get("output_dir")
    if not output_dir:
        raise ConfigError("config key 'output_dir' is required: the folder for generated_predictions.jsonl")
    if config.finetuning.stage == "rm":  # a reward model scores each answer of the eval pairs
        from lmforge.predict.rewards import run_reward_scores

        return run_reward_scores(config, Path(output_dir), out=sys.stdout)
    if config.training_kwargs.get("predict_with_generate"):
        from lmforge.predict.generate import run_generation

        return run_generation(config, Path(output_dir), out=sys.stdout)
    from lmforge.predict.perplexity import run_loss

    return run_loss(config, Path(output_dir), out=sys.stdout)
