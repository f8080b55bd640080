"""Preference training learns on real weights: SmolLM2-135M-Instruct, LoRA, a preference set of our own.

The preferred answer has one clear property: it ends with an exclamation mark where the
rejected answer, otherwise identical, ends with a full stop. The data goes through lmforge's
own loader (alpaca ranking format, dataset_info.json), and the held-out pairs have prompts
the training never saw. DPO: held-out ``rewards/accuracies`` above 0.8 and the margin
growing; KTO (the same pairs as desirable/undesirable answers): held-out pairwise accuracy of
its implied rewards above 0.8; RM: held-out pairwise accuracy of the scores above 0.8.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),
]  # minutes on a quiet machine, far more on a loaded one


def preference_rows(numbers: range) -> list[dict[str, str]]:
    rows = []
    for i in numbers:
        a, b = i % 7 + 1, i // 7 + 2
        rows.append(
            {
                "instruction": f"What is {a} plus {b}?",
                "input": "",
                "chosen": f"{a} plus {b} is {a + b}!",
                "rejected": f"{a} plus {b} is {a + b}.",
            }
        )
    return rows


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("prefs")
    columns = {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}
    info = {}
    for name, numbers in (("prefs_train", range(0, 32)), ("prefs_heldout", range(40, 50))):
        (folder / f"{name}.json").write_text(json.dumps(preference_rows(numbers)), encoding="utf-8")
        info[name] = {"file_name": f"{name}.json", "ranking": True, "columns": columns}
    (folder / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return folder


def values(model: Path, data: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "model_name_or_path": str(model),
        "stage": "dpo",
        "finetuning_type": "lora",
        "lora_rank": 8,
        "dataset": "prefs_train",
        "eval_dataset": "prefs_heldout",
        "dataset_dir": str(data),
        "template": "chatml",
        "cutoff_len": 128,
        "output_dir": str(out),
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 10,
        "learning_rate": 1e-3,
        "max_steps": 8,
        "logging_steps": 1,
        "eval_strategy": "steps",
        "eval_steps": 4,
        "disable_gradient_checkpointing": True,  # short rows: recomputing costs more than it saves
        "save_strategy": "no",
        "pref_beta": 0.1,
        "report_to": "none",
        "seed": 1,
        "disable_tqdm": True,
    }
    settings.update(overrides)
    return settings


def run(settings: dict[str, Any]) -> Any:
    from lmforge.config import build_config
    from lmforge.train import run_training

    return run_training(build_config(settings))


def eval_records(out: Path) -> list[dict[str, Any]]:
    lines = (out / "trainer_log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "eval_loss" in r]


def test_lora_dpo_learns_the_preferred_property(asset: Any, dataset_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dpo"
    run(values(asset("smollm2"), dataset_dir, out))
    evals = eval_records(out)
    assert len(evals) >= 2  # steps 4 and 8, and the final evaluation of the run
    assert evals[-1]["eval_rewards/accuracies"] > 0.8, evals
    assert 0 < evals[0]["eval_rewards/margins"] < evals[-1]["eval_rewards/margins"], evals


def heldout_pairs(model: Path, data: Path, tmp_path: Path) -> Any:
    """The held-out pairs encoded by lmforge's loader, as the pairwise collator batches them."""
    from lmforge.config import build_config
    from lmforge.data import load_sft_datasets
    from lmforge.model.loader import load_tokenizer
    from lmforge.templates import resolve_template
    from lmforge.train.dpo import PairwiseCollator

    config = build_config(
        values(model, data, tmp_path / "encode", dataset="prefs_heldout", eval_dataset=None)
    )
    tokenizer = load_tokenizer(config.model)
    template = resolve_template(config.data.template, tokenizer)
    rows = load_sft_datasets(config, tokenizer, template, "dpo").train
    return PairwiseCollator(pad_token_id=tokenizer.pad_token_id)([rows[i] for i in range(len(rows))])


def test_lora_kto_learns_the_preferred_property(asset: Any, dataset_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lmforge.model.loss import sequence_log_probs

    model_dir = asset("smollm2")
    out = tmp_path / "kto"
    run(values(model_dir, dataset_dir, out, stage="kto", eval_dataset=None, eval_strategy="no"))
    batch = heldout_pairs(model_dir, dataset_dir, tmp_path)
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out).eval()
    args = batch["input_ids"], batch["attention_mask"], batch["labels"]
    with torch.no_grad():
        trained = sequence_log_probs(policy, *args)[0]
        with policy.disable_adapter():
            reference = sequence_log_probs(policy, *args)[0]
    chosen, rejected = (trained - reference).chunk(2)
    assert (chosen > rejected).float().mean().item() > 0.8


def test_lora_reward_model_ranks_heldout_pairs(asset: Any, dataset_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rm"
    outcome = run(values(asset("smollm2"), dataset_dir, out, stage="rm", learning_rate=1e-3))
    assert outcome.metrics["eval_rewards/accuracies"] > 0.8, outcome.metrics
    evals = eval_records(out)
    assert evals[0]["eval_rewards/margins"] < evals[-1]["eval_rewards/margins"]
