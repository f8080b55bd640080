"""GaLore, APOLLO, BAdam and Adam-mini with LLaMA-Factory's keys: each trains (the loss falls) and keeps
less optimizer state than AdamW on the same tiny Llama, as each method promises."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from datasets import Dataset
from transformers import TrainerCallback

from lmforge.config import build_config
from lmforge.errors import ConfigError
from lmforge.train import PreparedData, run_training
from lmforge.train.optimizers import optimizer_state_bytes
from tests.helpers.training import encoded_samples, settings


class StateSize(TrainerCallback):
    def on_train_end(self, args, state, control, optimizer=None, **kwargs):
        self.bytes = optimizer_state_bytes(optimizer)
        self.kind = type(optimizer).__name__


def train(model_dir: str, out: Path, **extra: object) -> tuple[list[float], StateSize]:
    values = settings(
        model_dir, out, learning_rate=3e-3, max_steps=6, save_steps=100, lr_scheduler_type="constant"
    )
    values.update({"finetuning_type": "full", **extra})
    size = StateSize()
    data = PreparedData(train=Dataset.from_list(encoded_samples(model_dir, 16)))
    run_training(build_config(values), data=data, callbacks=[size])
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry], size


@functools.cache
def adamw_state_bytes(model_dir: str, out: str) -> int:
    return train(model_dir, Path(out))[1].bytes


SMALL_RANK = {"galore_rank": 4, "galore_update_interval": 4, "galore_scale": 0.25}
CASES = {
    "galore_layerwise": {"use_galore": True, "galore_layerwise": True, **SMALL_RANK},
    "apollo": {"use_apollo": True, "apollo_rank": 4, "apollo_update_interval": 4, "apollo_scale": 1.0},
    "badam": {"use_badam": True, "badam_switch_interval": 2, "badam_switch_mode": "ascending"},
    "adam_mini": {"use_adam_mini": True},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_optimizer_trains_with_less_state_than_adamw(case, tmp_path_factory, tiny_model):
    model_dir = str(tiny_model("llama"))
    losses, size = train(model_dir, tmp_path_factory.mktemp(case), **CASES[case])
    assert len(losses) == 6
    assert sum(losses[-2:]) < sum(losses[:2]), losses  # it learns
    baseline = adamw_state_bytes(model_dir, str(tmp_path_factory.mktemp("adamw")))
    assert 0 < size.bytes < baseline, (size.kind, size.bytes, baseline)


def test_two_optimizers_or_layerwise_accumulation_are_refused(tmp_path, tiny_model):
    model_dir = str(tiny_model("llama"))
    with pytest.raises(ConfigError, match="keep one"):
        train(model_dir, tmp_path, use_galore=True, use_badam=True)
    with pytest.raises(ConfigError, match="gradient_accumulation_steps: 1"):
        train(model_dir, tmp_path, use_galore=True, galore_layerwise=True, gradient_accumulation_steps=2)
    with pytest.raises(ConfigError, match="badam_mode: layer"):
        train(model_dir, tmp_path, use_badam=True, badam_mode="ratio")
    with pytest.raises(ConfigError, match="not lora"):
        train(model_dir, tmp_path, use_apollo=True, finetuning_type="lora")
