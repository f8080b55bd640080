"""``tokenized_path`` as LLaMA-Factory uses it: the first run encodes, saves and stops; the next trains from it."""

from __future__ import annotations

from pathlib import Path

from lmforge.config import build_config
from lmforge.train import run_training

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_first_run_saves_and_stops_then_the_next_trains_from_it(tmp_path, tiny_model, caplog):
    saved = tmp_path / "tokenized"
    values = {
        "model_name_or_path": str(tiny_model("llama")),
        "dataset": "identity_demo",
        "dataset_dir": str(REPO_ROOT / "examples" / "data"),
        "template": "chatml",
        "cutoff_len": 64,
        "max_samples": 8,
        "tokenized_path": str(saved),
        "output_dir": str(tmp_path / "out"),
        "lora_rank": 4,
        "max_steps": 1,
        "report_to": "none",
        "disable_tqdm": True,
    }
    with caplog.at_level("INFO"):
        first = run_training(build_config(values))
    assert first.exit_code == 0 and not first.metrics
    assert any("run again with the same tokenized_path" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()  # nothing trained
    assert (saved / "data").is_dir()

    caplog.clear()
    with caplog.at_level("INFO"):
        second = run_training(build_config(values))
    assert any("loading encoded datasets from tokenized_path" in r.getMessage() for r in caplog.records)
    assert second.metrics["global_step"] == 1
    assert second.metrics["trained_samples"] > 0
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
