"""bench/lf_example_sweep.py: which model each LLaMA-Factory example runs with, and in what order."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import yaml

from tests.helpers.cli import REPO_ROOT


def _sweep() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "lf_example_sweep", REPO_ROOT / "bench" / "lf_example_sweep.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_are_swapped_by_family_and_local_outputs_stay() -> None:
    sweep = _sweep()
    assert sweep.tiny_for("meta-llama/Meta-Llama-3-8B-Instruct") == "llama3"
    assert sweep.tiny_for("Qwen/Qwen2-VL-7B-Instruct") == "qwen2_vl"
    assert sweep.tiny_for("Qwen/Qwen2-1.5B-Instruct") == "qwen2"
    for kept in (
        "saves/llama3-8b/full/sft",
        "models/llama3-8b-pro",
        "TechxGenus/Meta-Llama-3-8B-Instruct-AWQ",
    ):
        assert sweep.swap_model(kept) == kept
    assert sweep.swap_model("ISTA-DASLab/Meta-Llama-3-8B-Instruct-AQLM-2Bit-1x16").endswith("1x16")


def test_configs_that_read_training_outputs_run_after_training(tmp_path: Path) -> None:
    sweep = _sweep()
    files = {
        "train_lora/a_eval.yaml": {"adapter_name_or_path": "saves/x", "task": "mmlu_test"},
        "train_lora/b_sft.yaml": {"stage": "sft", "do_train": True},
        "inference/chat.yaml": {"adapter_name_or_path": "saves/x"},
        "extras/pissa/sft.yaml": {"stage": "sft", "do_train": True},
        "extras/nlg_eval/predict.yaml": {"do_predict": True, "adapter_name_or_path": "saves/x"},
    }
    for name, config in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(yaml.safe_dump(config), encoding="utf-8")
    order = sorted((tmp_path / name for name in files), key=lambda p: sweep._rank(tmp_path, p))
    assert [str(p.relative_to(tmp_path)) for p in order] == [
        "train_lora/b_sft.yaml",
        "extras/pissa/sft.yaml",
        "train_lora/a_eval.yaml",
        "extras/nlg_eval/predict.yaml",
        "inference/chat.yaml",
    ]


def test_ray_workers_fit_a_cpu_machine(tmp_path: Path) -> None:
    sweep = _sweep()
    example = tmp_path / "train_lora" / "ray.yaml"
    example.parent.mkdir()
    example.write_text(
        yaml.safe_dump(
            {"model_name_or_path": "saves/m", "ray_num_workers": 4, "resources_per_worker": {"GPU": 1}}
        ),
        encoding="utf-8",
    )
    config = sweep.swapped_config(example, example.relative_to(tmp_path), tmp_path)
    assert config["ray_num_workers"] == 2 and config["resources_per_worker"] == {"CPU": 1}
