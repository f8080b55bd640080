"""The lmforge command as a user runs it: subcommands, help, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import lmforge

CONFIGS = Path(__file__).parents[1] / "configs"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmforge", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_version():
    result = run("version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"lmforge {lmforge.__version__}"


def test_overview_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for name in ("version", "env", "train", "api", "chat", "export", "data", "template", "assets"):
        assert f"  {name} " in result.stdout


@pytest.mark.parametrize("name", ["train", "api", "chat", "export"])
def test_config_commands_explain_themselves(name):
    result = run(name, "--help")
    assert result.returncode == 0
    assert f"lmforge {name} cfg.yaml" in result.stdout
    assert "key=value" in result.stdout


def test_train_help_names_the_key_groups_and_how_to_list_the_keys():
    result = run("train", "--help")
    assert result.returncode == 0
    for group in ("model", "data", "finetuning", "generating", "serving", "evaluation", "training"):
        assert f"\n  {group} " in result.stdout
    assert "lmforge train --help keys" in result.stdout


def test_help_keys_lists_every_key_with_its_default_and_help():
    from lmforge.config.keys import all_keys
    from lmforge.config.legacy_training_keys import LEGACY_TRAINING_KEYS

    result = run("train", "--help", "keys")
    assert result.returncode == 0, result.stderr
    listed = {
        line.split(":")[0].strip()
        for line in result.stdout.splitlines()
        if line.startswith("  ") and not line.startswith("   ")
    }
    assert listed == all_keys() - set(LEGACY_TRAINING_KEYS)
    assert "  lora_rank: an integer; default 8\n      Rank of the LoRA matrices." in result.stdout
    assert "  learning_rate: a number; default 5e-05\n      The initial learning rate" in result.stdout
    assert "warmup_ratio" in result.stdout and "use_unsloth" in result.stdout


def test_help_keys_of_one_group():
    result = run("chat", "--help", "keys", "generating")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("generating: ")
    assert "  temperature: a number; default 0.95" in result.stdout
    assert "learning_rate" not in result.stdout and "lora_rank" not in result.stdout
    wrong = run("train", "--help", "keys", "modle")
    assert wrong.returncode == 2
    assert "unknown key group 'modle'; choose from: model, data" in wrong.stderr


def test_unknown_command():
    result = run("trian")
    assert result.returncode == 2
    assert "unknown command 'trian'" in result.stderr


def test_typo_in_config_prints_did_you_mean_and_exits_2():
    result = run("train", str(CONFIGS / "typo.yaml"))
    assert result.returncode == 2, result.stderr
    assert "unknown config key 'learnig_rate' (did you mean 'learning_rate'?)" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_env_json_fields():
    result = run("env", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("os", "architecture", "python", "gcc", "nvcc", "gpus", "torch", "libraries", "warnings"):
        assert key in report
    assert report["python"] == ".".join(map(str, sys.version_info[:3]))
    import torch
    import transformers

    assert report["torch"]["version"] == torch.__version__
    assert report["libraries"]["transformers"] == transformers.__version__
    for lib in ("peft", "datasets", "accelerate", "vllm", "deepspeed", "bitsandbytes", "flash-attn"):
        assert lib in report["libraries"]
    if not torch.cuda.is_available():
        assert report["gpus"] == []
        assert any("no GPU found" in w for w in report["warnings"])


def test_env_text_report_marks_missing_libraries():
    result = run("env")
    assert result.returncode == 0
    assert "torch" in result.stdout and "transformers" in result.stdout
    from importlib import metadata

    try:
        metadata.version("deepspeed")
    except metadata.PackageNotFoundError:
        assert any(
            line.startswith("deepspeed") and "not installed" in line for line in result.stdout.splitlines()
        )
