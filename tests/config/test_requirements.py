"""A key that needs an optional package (or a GPU) stops with one line naming the key and the extra."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from transformers.training_args import OptimizerNames

from lmforge.cli import main
from lmforge.config.requirements import DEEPSPEED, OPTIM_PACKAGES

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_train(tmp_path: Path, capsys: pytest.CaptureFixture[str], model: Path, **settings: object) -> str:
    config = {
        "model_name_or_path": str(model),
        "stage": "sft",
        "finetuning_type": "lora",
        "dataset": "identity_demo",
        "dataset_dir": str(REPO_ROOT / "examples" / "data"),
        "template": "chatml",
        "output_dir": str(tmp_path / "out"),
        "max_steps": 1,
        "report_to": "none",
        **settings,
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    code = main(["train", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("lmforge train: error:")]
    assert len(errors) == 1, err  # one line, no traceback
    return errors[0]


@pytest.mark.skipif(DEEPSPEED.installed(), reason="DeepSpeed is installed here")
def test_deepspeed_config_without_deepspeed_is_one_line(tmp_path, capsys, tiny_model):
    line = run_train(
        tmp_path,
        capsys,
        tiny_model("llama"),
        deepspeed=str(REPO_ROOT / "examples" / "deepspeed" / "ds_z3_config.json"),
    )
    assert "'deepspeed'" in line and "lmforge[deepspeed]" in line
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_missing_deepspeed_file_names_the_file(tmp_path, capsys, tiny_model):
    line = run_train(tmp_path, capsys, tiny_model("llama"), deepspeed=str(tmp_path / "nope.json"))
    assert "'deepspeed'" in line and "nope.json" in line


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_report_to_a_missing_integration(tmp_path, capsys, tiny_model):
    line = run_train(tmp_path, capsys, tiny_model("llama"), report_to="wandb")
    assert "'report_to'" in line and "wandb" in line


@pytest.mark.skipif(importlib.util.find_spec("schedulefree") is not None, reason="schedulefree is installed")
def test_optim_from_a_missing_package(tmp_path, capsys, tiny_model):
    line = run_train(tmp_path, capsys, tiny_model("llama"), optim="schedule_free_adamw")
    assert "'optim'" in line and "lmforge[schedulefree]" in line


def test_flash_attention_without_flash_attn_or_gpu(tmp_path, capsys, tiny_model):
    line = run_train(tmp_path, capsys, tiny_model("llama"), flash_attn="fa2")
    assert "'flash_attn'" in line and "flash-attn" in line


def test_every_optim_we_check_is_a_transformers_optim():
    names = {member.value for member in OptimizerNames}
    assert set(OPTIM_PACKAGES) <= names


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is not None, reason="liger-kernel is installed")
def test_enable_liger_kernel_means_use_liger_kernel_and_names_the_extra():
    from lmforge.config import build_config
    from lmforge.errors import ConfigError

    config = build_config({"enable_liger_kernel": True, "output_dir": "unused"})
    assert config.training_kwargs["use_liger_kernel"] is True
    with pytest.raises(ConfigError, match=r"lmforge\[liger\]"):
        config.training_arguments()
