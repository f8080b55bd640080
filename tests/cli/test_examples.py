"""Every config shipped in examples/ parses, and every path the READMEs name exists.

A user's first command copies one of these files; a renamed key or a moved file would fail
there, before any of the other tests would notice.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmforge.config.parser import load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIGS = sorted(p for p in (REPO_ROOT / "examples").rglob("*.yaml"))
README_FILES = [REPO_ROOT / "README.md", REPO_ROOT / "README_zh.md"]


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_example_config_parses(path: Path) -> None:
    config = load_config([str(path)])
    if "demo" not in path.parts:  # the demo's runner fills in the model path
        assert config.model.model_name_or_path, f"{path} names no model"
    if config.finetuning.stage == "sft":
        assert config.data.template, f"{path}: a chat fine-tune should name its template"


@pytest.mark.parametrize(
    "path",
    [p for p in EXAMPLE_CONFIGS if "train" in p.parts[-2] or "fsdp" in p.parts[-2]],
    ids=lambda p: str(p.relative_to(REPO_ROOT)),
)
def test_example_training_config_builds_training_arguments(path: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO_ROOT)  # deepspeed json paths are relative to the repository
    config = load_config([str(path)])
    assert config.training_kwargs.get("output_dir"), f"{path} names no output_dir"
    deepspeed = config.training_kwargs.get("deepspeed")
    if deepspeed:
        assert (REPO_ROOT / deepspeed).is_file(), f"{path}: deepspeed file {deepspeed} is missing"
        assert json.loads((REPO_ROOT / deepspeed).read_text())["zero_optimization"]["stage"] in (2, 3)
        return  # building the arguments imports deepspeed, which the CPU test venv does not have
    args = config.training_arguments()
    assert args.output_dir


def test_example_paths_named_in_readmes_exist() -> None:
    for readme in README_FILES:
        named = set(re.findall(r"examples/[\w./-]+\.(?:yaml|json|py)", readme.read_text(encoding="utf-8")))
        assert named, f"{readme.name} names no example"
        missing = sorted(p for p in named if not (REPO_ROOT / p).is_file())
        assert not missing, f"{readme.name} names missing files: {missing}"


def test_inference_example_serves_a_training_example_adapter() -> None:
    """The inference example points at the output_dir of the training example it belongs to."""
    train = load_config([str(REPO_ROOT / "examples/train_lora/qwen2_5_7b_lora_sft.yaml")])
    serve = load_config([str(REPO_ROOT / "examples/inference/qwen2_5_7b_lora_sft.yaml")])
    assert serve.model.adapter_name_or_path == [train.training_kwargs["output_dir"]] or (
        serve.model.adapter_name_or_path == train.training_kwargs["output_dir"]
    )
    assert serve.data.template == train.data.template
