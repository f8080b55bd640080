"""Shared by several test folders."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def encoded_samples(model_dir: str, count: int = 48) -> list[dict[str, list[int]]]:
    """Short question/answer pairs encoded with the model's real tokenizer; only answers are trained."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    samples = []
    for i in range(count):
        prompt = tokenizer(f"Question {i}: what is {i} plus {i % 7}?\n", add_special_tokens=False)[
            "input_ids"
        ]
        answer = tokenizer(f"It is {i + i % 7}." + " Indeed." * (i % 4), add_special_tokens=False)[
            "input_ids"
        ]
        answer = answer + [tokenizer.eos_token_id]
        samples.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer})
    return samples


def settings(model_dir: str, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "model_name_or_path": model_dir,
        "template": "chatml",
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 4,
        "max_steps": 6,
        "save_steps": 2,
        "logging_steps": 1,
        "learning_rate": 5e-3,
        "lora_rank": 4,
        "seed": 11,
        "report_to": "none",
        "disable_tqdm": True,
    }
    values.update(overrides)
    return values


def train(values: dict[str, Any], callbacks: list[Any] | None = None) -> Any:
    """Run lmforge's training workflow in this process on the hand-encoded samples."""
    from datasets import Dataset

    from lmforge.config import build_config
    from lmforge.train import PreparedData, run_training

    data = PreparedData(train=Dataset.from_list(encoded_samples(values["model_name_or_path"])))
    return run_training(build_config(values), callbacks=callbacks or [], data=data)
