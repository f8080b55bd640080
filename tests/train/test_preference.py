"""Stages dpo, kto and rm end to end on a tiny llama: logs, precomputed reference, reward-model
format, KTO's mismatched pairs, and LLaMA-Factory 0.9.2's example configs.

The in-process runs use hand-encoded pairs in the data contract's layout (real tokenizer),
so they test the training side alone; the example configs go through `lmforge train` with
LLaMA-Factory's demo data.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
TRL_METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)


@functools.cache
def pairs(model_dir: str, count: int = 12) -> list[dict[str, Any]]:
    """Prompt, then a short chosen and a longer rejected answer, each ending with EOS; answers trained."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    rows = []
    for i in range(count):
        prompt = encode(f"Question {i}: is {i} even?\n")
        chosen = encode(f" {'Yes' if i % 2 == 0 else 'No'}.") + [tokenizer.eos_token_id]
        rejected = encode(f" Maybe {i}, maybe not.") + [tokenizer.eos_token_id]
        rows.append(
            {
                "chosen_input_ids": prompt + chosen,
                "chosen_labels": [-100] * len(prompt) + chosen,
                "rejected_input_ids": prompt + rejected,
                "rejected_labels": [-100] * len(prompt) + rejected,
                "prompt_length": len(prompt),
            }
        )
    return rows


def kto_rows(model_dir: str) -> list[dict[str, Any]]:
    rows = []
    for pair in pairs(model_dir):
        for side, tag in (("chosen", True), ("rejected", False)):
            rows.append(
                {
                    "input_ids": pair[f"{side}_input_ids"],
                    "labels": pair[f"{side}_labels"],
                    "prompt_length": pair["prompt_length"],
                    "kto_tag": tag,
                }
            )
    return rows


def settings(model_dir: str, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "model_name_or_path": model_dir,
        "template": "chatml",
        "stage": "dpo",
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "max_steps": 3,
        "save_steps": 100,
        "logging_steps": 1,
        "learning_rate": 5e-3,
        "lora_rank": 4,
        "seed": 3,
        "report_to": "none",
        "disable_tqdm": True,
    }
    values.update(overrides)
    return values


def train(values: dict[str, Any], rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]] | None = None):
    from datasets import Dataset

    from lmforge.config import build_config
    from lmforge.train import PreparedData, run_training

    data = PreparedData(
        train=Dataset.from_list(rows), eval=Dataset.from_list(eval_rows) if eval_rows else None
    )
    return run_training(build_config(values), data=data)


def log_records(output_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def llama(tiny_model) -> str:
    return str(tiny_model("llama"))


def test_dpo_logs_trl_metrics_pairs_per_second_and_eval(llama: str, tmp_path: Path) -> None:
    rows = pairs(llama)
    out = tmp_path / "dpo"
    outcome = train(
        settings(llama, out, do_eval=True, eval_strategy="steps", eval_steps=3, plot_loss=True),
        rows[:8],
        rows[8:10],
    )
    steps = [r for r in log_records(out) if "loss" in r]
    assert len(steps) == 3 and all(set(TRL_METRICS) <= set(r) for r in steps)
    assert steps[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # LoRA starts at the reference
    assert steps[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # -log sigmoid(0)
    results = json.loads((out / "all_results.json").read_text())
    assert results["trained_pairs"] == 12  # 3 steps of 4 pairs
    assert results["trained_pairs_per_second"] > 0
    assert {f"eval_{m}" for m in TRL_METRICS} <= set(results)
    assert outcome.metrics["eval_rewards/accuracies"] == results["eval_rewards/accuracies"]
    assert (out / "adapter_model.safetensors").is_file() and (
        out / "training_rewards_accuracies.png"
    ).is_file()


def test_precomputed_reference_equals_the_live_one_and_holds_no_weights(llama: str, tmp_path: Path) -> None:
    """Full fine-tuning: the live reference is a frozen copy; precomputed, it is columns and nothing else."""
    from datasets import Dataset

    from lmforge.config import build_config
    from lmforge.train import dpo
    from lmforge.train.preference_trainer import reference_log_probs
    from lmforge.train.workflow import load_training_model, start

    rows = pairs(llama)[:6]
    config = build_config(
        settings(llama, tmp_path / "x", finetuning_type="full", precompute_ref_log_probs=True)
    )
    run = start(config)
    model = load_training_model(run, Dataset.from_list(rows))
    collator = dpo.PairwiseCollator(pad_token_id=run.tokenizer.pad_token_id)
    reference, (train_set, _) = dpo.pair_reference(
        config, run.args, model, collator, (Dataset.from_list(rows), None)
    )
    assert reference is None  # nothing to run or hold while training

    live_config = build_config(settings(llama, tmp_path / "y", finetuning_type="full"))
    live, _ = dpo.pair_reference(live_config, run.args, model, collator, (Dataset.from_list(rows), None))
    assert live is not None and live.kind == "frozen_model"
    expected = reference_log_probs(live, model, collator(rows))[0]
    batch = collator([train_set[i] for i in range(len(rows))])
    torch.testing.assert_close(batch["ref_logps"], expected)


@pytest.fixture
def reference_runs(monkeypatch, tmp_path: Path) -> dict[str, int]:
    """A fresh cache, and counts of references built and reference passes run (``Reference.active``)."""
    from lmforge.train import dpo, kto
    from lmforge.train.reference import Reference

    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    counts = {"built": 0, "passes": 0}
    active = Reference.active

    def counted_active(self, policy):
        counts["passes"] += 1
        return active(self, policy)

    def counted_build(module):
        build = module.build_reference

        def counted(*args, **kwargs):
            counts["built"] += 1
            return build(*args, **kwargs)

        return counted

    monkeypatch.setattr(Reference, "active", counted_active)
    for module in (dpo, kto):
        monkeypatch.setattr(module, "build_reference", counted_build(module))
    return counts


def run_counts(counts: dict[str, int]) -> tuple[int, int]:
    seen = (counts["built"], counts["passes"])
    counts.update(built=0, passes=0)
    return seen


def test_precomputed_reference_is_cached_with_the_data_and_read_back(
    llama: str, tmp_path: Path, reference_runs: dict[str, int]
) -> None:
    """A second run with the same data and reference builds and runs no reference, and trains the
    same; a changed reference (its adapter rewritten in place) is computed again."""
    from tests.helpers.serving import make_lora_adapter

    rows = pairs(llama)
    adapter = make_lora_adapter(Path(llama), tmp_path / "adapters" / "ref")

    def run(name: str, **overrides: Any) -> list[dict[str, Any]]:
        values = settings(llama, tmp_path / name, precompute_ref_log_probs=True, do_eval=True, **overrides)
        train(values, rows[:8], rows[8:10])
        return [r for r in log_records(tmp_path / name) if "loss" in r]

    first = run("first")
    built, passes = run_counts(reference_runs)
    assert built == 1 and passes == 3  # 8 training + 2 eval pairs, 4 pairs a pass
    entries = list((tmp_path / "cache" / "datasets" / "reference").iterdir())
    assert len(entries) == 2 and all((e / "report.json").is_file() for e in entries)  # train and eval
    assert not [e for e in entries if e.name.startswith(".")]  # written, then renamed

    second = run("second")
    assert run_counts(reference_runs) == (0, 0)  # read from the cache: no reference built or run
    assert [r["loss"] for r in second] == pytest.approx([r["loss"] for r in first], abs=1e-6)
    assert [r["rewards/chosen"] for r in second] == pytest.approx(
        [r["rewards/chosen"] for r in first], abs=1e-6
    )

    with_adapter = run("ref_adapter", ref_model=llama, ref_model_adapters=str(adapter))
    assert run_counts(reference_runs) == (1, 3)  # another reference: computed
    assert with_adapter[0]["rewards/chosen"] != pytest.approx(first[0]["rewards/chosen"], abs=1e-6)
    make_lora_adapter(Path(llama), adapter, targets=("k_proj", "o_proj"))  # the same folder, new weights
    rewritten = run("ref_adapter_rewritten", ref_model=llama, ref_model_adapters=str(adapter))
    assert run_counts(reference_runs) == (1, 3)
    assert rewritten[0]["rewards/chosen"] != pytest.approx(with_adapter[0]["rewards/chosen"], abs=1e-6)


def test_kto_precomputed_reference_is_read_back_from_the_cache(
    llama: str, tmp_path: Path, reference_runs: dict[str, int]
) -> None:
    values = settings(
        llama, tmp_path / "a", stage="kto", per_device_train_batch_size=6, precompute_ref_log_probs=True
    )
    train(values, kto_rows(llama))
    assert run_counts(reference_runs) == (1, 12)  # 24 examples and their partners, 4 a pass
    train({**values, "output_dir": str(tmp_path / "b")}, kto_rows(llama))
    assert run_counts(reference_runs) == (0, 0)
    firsts = [[r for r in log_records(tmp_path / name) if "loss" in r][0] for name in "ab"]
    assert firsts[0]["loss"] == pytest.approx(firsts[1]["loss"], abs=1e-6)


def test_orpo_and_simpo_use_no_reference(llama: str, tmp_path: Path) -> None:
    for loss in ("orpo", "simpo"):
        out = tmp_path / loss
        train(settings(llama, out, pref_loss=loss, max_steps=1), pairs(llama)[:4])
        first = log_records(out)[0]
        # no reference: the rewards are beta times the policy's mean token log-probabilities
        assert first["rewards/chosen"] < 0 and first["rewards/margins"] != 0


def test_kto_pairs_each_prompt_with_another_answer(llama: str) -> None:
    from datasets import Dataset

    from lmforge.train.kto import add_mismatched_partners

    rows = [  # row i: prompt [10 + i, 11 + i], answer [500 + i, 2]
        {
            "input_ids": [10 + i, 11 + i, 500 + i, 2],
            "labels": [-100, -100, 500 + i, 2],
            "prompt_length": 2,
            "kto_tag": i % 2 == 0,
        }
        for i in range(9)
    ]
    dataset = add_mismatched_partners(Dataset.from_list(rows), cutoff_len=3, seed=0)
    partners = set()
    for i, row in enumerate(dataset):
        assert row["kl_input_ids"][:2] == [10 + i, 11 + i] and row["kl_labels"][:2] == [-100, -100]
        partner = row["kl_input_ids"][2] - 500
        assert partner != i and row["kl_labels"][2:] == [500 + partner]  # cut to cutoff_len from the end
        partners.add(partner)
    assert len(partners) == len(rows)  # every answer serves as a partner once


def test_kto_run_logs_rewards_and_kl(llama: str, tmp_path: Path) -> None:
    out = tmp_path / "kto"
    train(settings(llama, out, stage="kto", per_device_train_batch_size=6), kto_rows(llama))
    steps = [r for r in log_records(out) if "loss" in r]
    assert all("kl" in r and "rewards/chosen" in r and "logps/rejected" in r for r in steps)
    assert steps[0]["loss"] == pytest.approx(0.5, abs=1e-3)  # 1 - sigmoid(0) at the start


@pytest.mark.parametrize("finetuning_type", ["full", "lora"])
def test_reward_model_loads_without_lmforge(llama: str, tmp_path: Path, finetuning_type: str) -> None:
    """The saved reward model scores the eval pairs as the trainer did, through transformers/peft alone."""
    from transformers import AutoModelForSequenceClassification

    rows = pairs(llama)
    out = tmp_path / "rm"
    values = settings(
        llama, out, stage="rm", finetuning_type=finetuning_type, do_eval=True, learning_rate=1e-3
    )
    outcome = train(values, rows[:8], rows[8:])
    if finetuning_type == "full":
        model = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32)
    else:
        from peft import PeftModel

        config = json.loads((out / "adapter_config.json").read_text())
        assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]
        from transformers import AutoTokenizer

        base = AutoModelForSequenceClassification.from_pretrained(llama, num_labels=1, dtype=torch.float32)
        base.config.pad_token_id = AutoTokenizer.from_pretrained(out).pad_token_id
        model = PeftModel.from_pretrained(base, out)
    assert model.config.num_labels == 1
    model.eval()
    from lmforge.train.dpo import PairwiseCollator
    from lmforge.train.rm import answer_scores

    batch = PairwiseCollator(pad_token_id=model.config.pad_token_id)(rows[8:])
    with torch.no_grad():
        chosen, rejected = answer_scores(model, batch).chunk(2)
    assert outcome.metrics["eval_rewards/chosen"] == pytest.approx(chosen.mean().item(), abs=1e-4)
    assert outcome.metrics["eval_rewards/rejected"] == pytest.approx(rejected.mean().item(), abs=1e-4)


def lmforge(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "lmforge", *args]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    ("config", "out"),
    [
        ("llamafactory_llama3_lora_dpo.yaml", "saves/llama3-8b/lora/dpo"),
        ("llamafactory_llama3_lora_kto.yaml", "saves/llama3-8b/lora/kto"),
        ("llamafactory_llama3_lora_reward.yaml", "saves/llama3-8b/lora/reward"),
    ],
)
def test_llamafactory_example_configs_run_with_only_the_model_changed(
    tiny_model: Any, shared_data: Path, tmp_path: Path, config: str, out: str
) -> None:
    (tmp_path / "data").symlink_to(shared_data, target_is_directory=True)
    done = lmforge(
        [
            "train",
            str(REPO_ROOT / "tests" / "configs" / config),
            f"model_name_or_path={tiny_model('llama3')}",
            "max_steps=1",
            "max_samples=2",  # two pairs: one step of its 8 accumulated batches
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / out / "all_results.json").read_text())
    assert results["global_step"] == 1
    assert (tmp_path / out / "adapter_model.safetensors").is_file()
    records = [json.loads(line) for line in (tmp_path / out / "trainer_log.jsonl").read_text().splitlines()]
    assert any("rewards/chosen" in r for r in records)


def test_llamafactory_qwen2vl_dpo_config_is_refused_in_one_line(
    tiny_model: Any, shared_data: Path, tmp_path: Path
) -> None:
    (tmp_path / "data").symlink_to(shared_data, target_is_directory=True)
    done = lmforge(
        [
            "train",
            str(REPO_ROOT / "tests" / "configs" / "llamafactory_qwen2vl_lora_dpo.yaml"),
            f"model_name_or_path={tiny_model('qwen2_vl')}",
            "max_steps=1",
        ],
        cwd=tmp_path,
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "rlhf_v" in last and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_qwen2_vl_dpo_pairs_train_with_their_pictures(tiny_model: Any, tmp_path: Path, monkeypatch) -> None:
    """Image pairs (tiny Qwen2-VL): both answers see the prompt's picture, which changes their log-probs."""
    from transformers import AutoConfig

    from lmforge.config import build_config
    from lmforge.data import load_sft_datasets
    from lmforge.media.models import media_processing_for
    from lmforge.model.loader import load_tokenizer
    from lmforge.model.loss import sequence_log_probs
    from lmforge.templates import get_template
    from lmforge.train.dpo import PairwiseCollator
    from lmforge.train.preference_trainer import model_inputs
    from tests.helpers.media import png

    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "pics").mkdir()
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220)}
    for name, rgb in colours.items():
        (tmp_path / "pics" / f"{name}.png").write_bytes(png(rgb, (56, 56)))
    rows = [
        {
            "conversations": [{"from": "human", "value": "<image>What colour is this?"}],
            "chosen": {"from": "gpt", "value": f"{name.title()}."},
            "rejected": {"from": "gpt", "value": "It is green."},
            "images": [f"pics/{name}.png"],
        }
        for name in colours
    ]
    (tmp_path / "pairs.json").write_text(json.dumps(rows), encoding="utf-8")
    columns = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "images": "images"}
    info = {
        "pic_pairs": {
            "file_name": "pairs.json",
            "ranking": True,
            "formatting": "sharegpt",
            "columns": columns,
        }
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    model_dir = str(tiny_model("qwen2_vl"))
    values = settings(
        model_dir,
        tmp_path / "out",
        template="qwen2_vl",
        dataset="pic_pairs",
        dataset_dir=str(tmp_path),
        media_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=1,
    )
    from lmforge.train import run_training

    outcome = run_training(build_config(values))
    assert outcome.metrics["trained_pairs"] == 2
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()

    config = build_config(values)
    tokenizer = load_tokenizer(config.model)
    media = media_processing_for(AutoConfig.from_pretrained(model_dir), model_dir, config.model)
    pairs_set = load_sft_datasets(config, tokenizer, get_template("qwen2_vl"), "dpo", media=media).train
    collate = PairwiseCollator(pad_token_id=tokenizer.pad_token_id, media=media)
    batch = collate([pairs_set[0]])
    assert "pixel_values" in batch and batch["image_grid_thw"].shape[0] == 2  # the picture, for both rows
    swapped = collate([{**pairs_set[0], "media": pairs_set[1]["media"]}])
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        own = sequence_log_probs(model, **model_inputs(batch))[0]
        other = sequence_log_probs(model, **model_inputs(swapped))[0]
    assert not torch.allclose(own, other)  # the picture reaches the log-probabilities
