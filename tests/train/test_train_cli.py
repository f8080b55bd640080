"""`lmforge train cfg.yaml` end to end: YAML, dataset files, template, packing, evaluation, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.cli import base_config, lmforge, write_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_example_cpu_config_trains_with_packing_and_evaluation(tiny_model: Any, tmp_path: Path) -> None:
    """examples/train_lora/tiny_cpu_lora_sft.yaml as shipped, plus a validation split, shortened."""
    out = tmp_path / "out"
    overrides = [
        f"model_name_or_path={tiny_model('llama')}",
        f"output_dir={out}",
        "max_steps=3",
        "val_size=0.25",
        "eval_strategy=steps",
        "eval_steps=2",
    ]
    done = lmforge(["train", "examples/train_lora/tiny_cpu_lora_sft.yaml", *overrides], cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    assert results["packing"] is True and results["chunked_loss"] is True
    assert results["trained_samples"] > results["global_step"] * 4, "packed rows hold several samples"
    assert "eval_loss" in results
    assert (out / "adapter_model.safetensors").is_file() and (out / "training_loss.png").is_file()
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert any("eval_loss" in r for r in log)


def test_streaming_dataset_trains_for_max_steps_and_needs_them(tiny_model: Any, tmp_path: Path) -> None:
    """streaming: true reads the file lazily; a stream has no length, so max_steps is required."""
    base = [
        "examples/train_lora/tiny_cpu_lora_sft.yaml",
        f"model_name_or_path={tiny_model('llama')}",
        "streaming=true",
        "packing=false",
        "save_steps=100",
    ]
    out = tmp_path / "out"
    done = lmforge(["train", *base, f"output_dir={out}", "max_steps=2"], cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    assert results["global_step"] == 2 and results["trained_tokens"] > 0

    refused = lmforge(["train", *base, f"output_dir={tmp_path / 'no_steps'}", "max_steps=-1"], cwd=REPO_ROOT)
    assert refused.returncode == 2
    assert "streaming: true needs max_steps" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_config_errors_stop_with_one_line_and_exit_2(
    tiny_model: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmforge.cli import main

    write_dataset(tmp_path / "data")
    info_path = tmp_path / "data" / "dataset_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8"))
    info["pictures"] = {"file_name": "sums.json", "columns": {"prompt": "instruction", "images": "images"}}
    info_path.write_text(json.dumps(info), encoding="utf-8")
    model = str(tiny_model("llama"))
    cases = {
        "media": (
            {"dataset": "pictures"},
            "dataset 'pictures' has images columns, but the model takes text only",
        ),
        "quantization": ({"quantization_bit": 4}, "needs a CUDA GPU"),
        "no_output_dir": ({"output_dir": None}, "'output_dir' is required"),
        "adapter": (
            {"finetuning_type": "full", "adapter_name_or_path": str(tmp_path)},
            "needs finetuning_type: lora",
        ),
        "target": ({"lora_target": "qproj"}, "'lora_target': qproj not found"),
    }
    for name, (overrides, message) in cases.items():
        config = base_config(model, tmp_path / name, **overrides)
        config = {k: v for k, v in config.items() if v is not None} | {"dataset_dir": str(tmp_path / "data")}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        assert main(["train", str(path)]) == 2, name
        errors = [
            line for line in capsys.readouterr().err.splitlines() if line.startswith("lmforge train: error")
        ]
        assert len(errors) == 1 and message in errors[0], (name, errors)


@pytest.mark.slow
def test_tutorial_config_runs_with_only_the_model_changed(
    tiny_model: Any, shared_data: Path, tmp_path: Path
) -> None:
    """The foundation issue's Qwen2.5-7B config (bf16, cosine, warmup_ratio...) on a CPU and a tiny Qwen2."""
    (tmp_path / "data").symlink_to(
        shared_data, target_is_directory=True
    )  # LLaMA-Factory's data/ beside the run
    tutorial = REPO_ROOT / "tests" / "configs" / "tutorial_qwen2_5_lora_sft.yaml"
    done = lmforge(
        [
            "train",
            str(tutorial),
            f"model_name_or_path={tiny_model('qwen2')}",
            "max_steps=2",
            "max_samples=40",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bf16: true needs a GPU" in done.stderr
    out = tmp_path / "saves" / "qwen2.5-7b" / "lora" / "sft"
    assert (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "all_results.json").read_text())["global_step"] == 2
