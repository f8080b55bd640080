"""``do_predict`` with ``stage: rm``: each eval pair's two scores, as the reward model itself computes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lmforge.cli import main


def reward_config(path: Path, model: Path, data: Path, **settings) -> Path:
    values = {
        "model_name_or_path": str(model),
        "stage": "rm",
        "finetuning_type": "lora",
        "lora_rank": 4,
        "do_train": True,
        "do_predict": True,
        "dataset": "dpo_en_demo",
        "eval_dataset": "dpo_zh_demo",
        "dataset_dir": str(data),
        "template": "chatml",
        "cutoff_len": 96,
        "max_samples": 5,
        "max_steps": 2,
        "learning_rate": 1e-3,
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 2,  # 5 pairs: the last batch is a single pair
        "infer_dtype": "float32",
        "report_to": "none",
        "disable_tqdm": True,
        "output_dir": str(path / "out"),
        **settings,
    }
    config = path / "rm.yaml"
    config.write_text(yaml.safe_dump(values))
    return config


def score_lines(folder: Path) -> list[dict]:
    text = (folder / "generated_predictions.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines()]


def direct_scores(model_dir: Path, adapter: Path, config_path: Path) -> list[tuple[float, float]]:
    """Each answer scored alone (no padding) by transformers + peft on the saved adapter."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from lmforge.config import load_config
    from lmforge.data import load_sft_datasets
    from lmforge.model.loader import load_tokenizer
    from lmforge.templates import resolve_template

    config = load_config([str(config_path)])
    tokenizer = load_tokenizer(config.model)
    pairs = load_sft_datasets(config, tokenizer, resolve_template("chatml", tokenizer), "rm").eval
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter).eval()
    scores = []
    with torch.no_grad():
        for pair in pairs:
            chosen, rejected = (
                float(model(input_ids=torch.tensor([pair[f"{side}_input_ids"]])).logits[0, 0])
                for side in ("chosen", "rejected")
            )
            scores.append((chosen, rejected))
    return scores


def test_scores_are_the_models_own_with_and_without_training(tiny_model, shared_data, tmp_path):
    model = tiny_model("llama")
    config = reward_config(tmp_path, model, shared_data)
    assert main(["train", str(config)]) == 0
    out = tmp_path / "out"
    lines = score_lines(out)
    assert len(lines) == 5 and all(set(line) == {"chosen", "rejected"} for line in lines)
    expected = direct_scores(model, out, config)
    for line, (chosen, rejected) in zip(lines, expected, strict=True):
        assert line["chosen"] == pytest.approx(chosen, abs=1e-5)
        assert line["rejected"] == pytest.approx(rejected, abs=1e-5)
    assert len({line["chosen"] for line in lines}) == 5  # five different pairs, in dataset order

    results = json.loads((out / "predict_results.json").read_text())
    wins = [line["chosen"] > line["rejected"] for line in lines]
    assert results["predict_accuracy"] == pytest.approx(sum(wins) / 5)
    margins = [line["chosen"] - line["rejected"] for line in lines]
    assert results["predict_margin"] == pytest.approx(sum(margins) / 5, abs=1e-5)
    assert results["predict_pairs"] == 5 and results["predict_samples_per_second"] > 0
    assert not list(out.glob(".generated_predictions.jsonl.*"))  # written, then renamed

    # prediction alone (no do_train, eval_dataset only) on the saved adapter: the same lines
    check = tmp_path / "check"
    code = main(["train", str(config), "do_train=false", "dataset=null", f"adapter_name_or_path={out}",
                 f"output_dir={check}"])  # fmt: skip
    assert code == 0
    assert score_lines(check) == lines
