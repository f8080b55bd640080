"""Shared by several test folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def write_dataset(folder: Path, count: int = 32) -> None:
    """An alpaca-format dataset of our own with its dataset_info.json."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"instruction": f"Add {i} and {i % 5}.", "input": "", "output": f"{i} plus {i % 5} is {i + i % 5}."}
        for i in range(count)
    ]
    (folder / "sums.json").write_text(json.dumps(rows), encoding="utf-8")
    (folder / "dataset_info.json").write_text(
        json.dumps({"sums": {"file_name": "sums.json"}}), encoding="utf-8"
    )


def lmforge(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    command = [sys.executable, "-m", "lmforge", *args]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


def base_config(model: str, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "model_name_or_path": model,
        "stage": "sft",
        "finetuning_type": "lora",
        "lora_rank": 4,
        "dataset": "sums",
        "dataset_dir": str(tmp_path / "data"),
        "template": "chatml",
        "cutoff_len": 64,
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 4,
        "learning_rate": 1.0e-3,
        "max_steps": 3,
        "logging_steps": 1,
        "save_steps": 100,
        "report_to": "none",
        "seed": 5,
    }
    config.update(overrides)
    return config
