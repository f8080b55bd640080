"""The memory/time estimate: its parts against the real model, its table, `gradient_checkpointing:
auto` on a run that fits and one that does not (free memory faked), and predicted against measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import AutoConfig, AutoModelForCausalLM, TrainerCallback

from lmforge.cli import estimate as estimate_cli
from lmforge.config import build_config, hardware
from lmforge.train.estimate import MIB, RETAINED_PART, ModelShape, Workload, estimate_run, estimate_training
from tests.helpers.training import encoded_samples, settings, train

GIB = 2**30


@pytest.fixture
def free_memory(monkeypatch: pytest.MonkeyPatch) -> Any:
    def fake(free: int, total: int = 64 * GIB) -> None:
        monkeypatch.setattr(hardware, "memory_bytes", lambda: (total, free))

    return fake


def test_shape_counts_match_the_real_model_and_its_lora(tiny_model: Any) -> None:
    from peft import LoraConfig, get_peft_model

    path = tiny_model("llama")
    shape = ModelShape.from_config(AutoConfig.from_pretrained(path))
    model = AutoModelForCausalLM.from_pretrained(path)
    assert shape.parameters == sum(p.numel() for p in model.parameters())
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert shape.lora_parameters(4, ["q_proj", "v_proj", "down_proj"]) == trainable


@pytest.mark.parametrize("padded", [False, True], ids=["one-length", "padded"])
def test_activations_are_the_tensors_autograd_saves(tiny_model: Any, padded: bool) -> None:
    """The per-token count against the tensors a real LoRA forward saves for backward (weights aside),
    with SDPA's padding mask and repeated k/v when rows differ in length."""
    from peft import LoraConfig, get_peft_model

    from lmforge.model.loss import chunked_causal_lm_loss

    path = tiny_model("llama")
    shape = ModelShape.from_config(AutoConfig.from_pretrained(path))
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa"),
        LoraConfig(r=4, target_modules=list(shape.linear_shapes)),
    )
    rows, length = 3, 40
    ids = torch.randint(0, 1000, (rows, length))
    mask = torch.ones(rows, length, dtype=torch.long)
    if padded:
        mask[0, -7:] = 0
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    causal_lm = model.base_model.model
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        hidden = causal_lm.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        chunked_causal_lm_loss(hidden, causal_lm.lm_head.weight, ids)
    counted = (
        shape.layers
        * rows
        * length
        * 4
        * shape.activation_elements_per_token(4 * 7, full=False, eager=False, row=length, padded=padded)
    )
    assert abs(sum(saved.values()) - counted) <= 0.03 * counted, (sum(saved.values()), counted)


def test_pairs_count_both_rows_and_their_longer_answer(tiny_model: Any, tmp_path: Path) -> None:
    """dpo/rm run chosen and rejected as rows of one batch, padded to the longer of the two."""
    path = str(tiny_model("llama"))
    samples = encoded_samples(path)
    pairs = Dataset.from_list(
        [
            {
                "chosen_input_ids": a["input_ids"],
                "chosen_labels": a["labels"],
                "rejected_input_ids": b["input_ids"],
                "rejected_labels": b["labels"],
            }
            for a, b in zip(samples[::2], samples[1::2], strict=True)
        ]
    )
    config = build_config(settings(path, tmp_path / "out", stage="dpo", cutoff_len=256))
    work = Workload.from_dataset(config, pairs, packing=False)
    longest = max(len(s["input_ids"]) for s in samples)
    assert work.rows == 8 and work.longest_row == longest < 256  # batch 4: 8 rows, not cutoff-long
    trained = sum(sum(1 for t in s["labels"] if t != -100) for s in samples) / len(pairs)
    assert work.trained_per_row == pytest.approx(trained)
    model_config = AutoConfig.from_pretrained(path)
    dpo = estimate_training(config, model_config, pairs, packing=False, dtype=torch.float32)
    sft = estimate_training(
        build_config(settings(path, tmp_path / "out", cutoff_len=256)),
        model_config,
        Dataset.from_list(samples),
        packing=False,
        dtype=torch.float32,
    )
    assert dpo.memory["activations"] > 1.5 * sft.memory["activations"]  # twice the rows
    assert dpo.step_flops > 2 * sft.step_flops  # twice the rows, and the reference's forward


def _estimate(tiny_model: Any, tmp_path: Path, **overrides: Any) -> Any:
    path = str(tiny_model("llama"))
    config = build_config(settings(path, tmp_path / "out", **overrides))
    data = Dataset.from_list(encoded_samples(path))
    return estimate_run(config, data, dtype=torch.float32, packing=False)


def test_table_names_every_part_with_total_and_free_memory(
    tiny_model: Any, tmp_path: Path, free_memory: Any
) -> None:
    free_memory(10 * GIB, total=16 * GIB)
    estimate = _estimate(tiny_model, tmp_path, finetuning_type="full")
    table = estimate.table()
    for part in (
        "runtime and data",
        "weights (float32)",
        "gradients",
        "optimizer states",
        "activations",
        "logits",
    ):
        assert part in table
    assert "of 16,384 MiB, 10,240 free: fits" in table
    assert "GFLOP/s (float32 matmul, measured)" in table
    params = ModelShape.from_config(AutoConfig.from_pretrained(tiny_model("llama"))).parameters
    assert estimate.memory["gradients (float32)"] == 4 * params  # full fine-tuning: every weight
    assert estimate.memory["optimizer states (adamw_torch)"] == 8 * params  # Adam's two moments
    assert estimate.step_flops > 0 and estimate.step_seconds > 0


def test_auto_checkpointing_stays_off_when_the_run_fits(
    tiny_model: Any, tmp_path: Path, free_memory: Any
) -> None:
    free_memory(32 * GIB)
    estimate = _estimate(tiny_model, tmp_path)
    assert estimate.fits and estimate.gradient_checkpointing is False
    assert estimate.activations_other < estimate.memory["activations"]  # what checkpointing would save


def test_auto_checkpointing_turns_on_when_the_run_would_not_fit(
    tiny_model: Any, tmp_path: Path, free_memory: Any
) -> None:
    probe = _estimate(tiny_model, tmp_path, gradient_checkpointing=False)
    runtime = probe.memory["runtime and data (measured)"]
    # free memory between the checkpointed and the full need: only checkpointing makes it fit
    need_without = probe.peak - runtime
    share = probe.memory.get(RETAINED_PART, 0.0) / probe.memory["activations"]
    need_with = (
        need_without - probe.memory["activations"] * (1 + share) + probe.activations_other * (1 + share)
    )
    free_memory(int((need_with + need_without) / 2 / 0.85))
    estimate = _estimate(tiny_model, tmp_path)
    assert estimate.gradient_checkpointing is True and estimate.fits
    # explicit settings keep their meanings
    assert _estimate(tiny_model, tmp_path, gradient_checkpointing=False).gradient_checkpointing is False
    assert (
        _estimate(tiny_model, tmp_path, disable_gradient_checkpointing=True).gradient_checkpointing is False
    )
    free_memory(64 * GIB)
    assert _estimate(tiny_model, tmp_path, gradient_checkpointing=True).gradient_checkpointing is True


def test_estimate_command_says_when_it_does_not_fit_and_names_the_keys(
    tiny_model: Any, tmp_path: Path, free_memory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"model_name_or_path: {tiny_model('llama')}\ndataset: identity_demo\ndataset_dir: "
        f"{Path(__file__).resolve().parents[2] / 'examples' / 'data'}\ntemplate: chatml\n"
        "cutoff_len: 256\nper_device_train_batch_size: 4\nmax_steps: 5\nlora_rank: 16\n"
    )
    free_memory(32 * GIB)
    assert estimate_cli.main([str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "estimate (before loading weights)" in out and ": fits" in out and "5 steps" in out
    free_memory(1 * MIB)
    assert estimate_cli.main([str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "does NOT fit" in out
    assert "per_device_train_batch_size: 2 with gradient_accumulation_steps: 2" in out
    assert "cutoff_len: 128" in out and "lora_rank: 8" in out


class CheckpointingSeen(TrainerCallback):
    def __init__(self) -> None:
        self.enabled: bool | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.enabled = bool(getattr(model, "is_gradient_checkpointing", False))


def test_training_run_follows_the_estimate_and_records_its_accuracy(
    tiny_model: Any, tmp_path: Path, free_memory: Any, record_property: Any
) -> None:
    """A real run with `auto` under faked low memory trains checkpointed; predicted vs measured
    peak and step time are recorded (all_results.json), and the peak is checked within 25%."""
    path = str(tiny_model("llama"))
    probe = _estimate(tiny_model, tmp_path, gradient_checkpointing=False)
    need = probe.peak - probe.memory["runtime and data (measured)"]
    free_memory(int(need / 0.85 * 0.9))  # just short of fitting without checkpointing
    seen = CheckpointingSeen()
    outcome = train(settings(path, tmp_path / "run", max_steps=4, save_steps=100), callbacks=[seen])
    assert seen.enabled is True
    metrics = json.loads((tmp_path / "run" / "all_results.json").read_text())
    predicted, measured = metrics["estimated_peak_mib"], metrics["peak_rss_mib"]
    step_predicted, step_measured = metrics["estimated_step_seconds"], metrics["train_runtime"] / 4
    record_property("peak_mib_predicted_measured", (predicted, measured))
    record_property("step_s_predicted_measured", (step_predicted, step_measured))
    print(f"tiny llama: peak {predicted} vs {measured} MiB, step {step_predicted} vs {step_measured:.3f} s")
    assert outcome.metrics["gradient_checkpointing"] is True
    assert abs(predicted - measured) <= 0.25 * measured
    assert step_predicted > 0


# real SmolLM2-135M LoRA runs (bench settings: alpaca_en_demo x100, lora_target all, rank 8, fp32, 2 steps,
# checkpointing off), AMD EPYC without native bf16, 2026-12-04: (cutoff, batch, predicted MiB by the
# formula then, measured peak RSS MiB). Old formula (no malloc term, q/k rotary copies counted):
# 4,970 and 3,097 MiB (-18% / -13%). Also measured, stage dpo (dpo_en_demo x20, batch 2 pairs, cutoff 256,
# 1 step): 3,958 predicted, 3,693 measured (old formula 2,109). bench/RESULTS.md "Issue 15" has the probes.
MEASURED_SMOLLM2 = [(512, 4, 6644.3, 6062.9), (256, 4, 3876.4, 3576.9)]
RUNTIME_MIB = 550  # "runtime and data (measured)" of those runs' estimates (lmforge estimate: 542-549)


@pytest.mark.parametrize(("cutoff", "batch", "predicted", "measured"), MEASURED_SMOLLM2)
def test_recorded_smollm2_runs_are_within_a_fifth_of_the_formula(
    asset: Any, shared_data: Path, tmp_path: Path, cutoff: int, batch: int, predicted: float, measured: float
) -> None:
    """The formula today against the recorded runs, no weights loaded: the process's own RSS
    (a test runner's) is replaced by what the runs measured at that point."""
    from lmforge.data import load_sft_datasets
    from lmforge.model.loader import load_tokenizer
    from lmforge.templates import resolve_template

    config = build_config(
        {
            "model_name_or_path": str(asset("smollm2")),
            "template": "chatml",
            "dataset": "alpaca_en_demo",
            "dataset_dir": str(shared_data),
            "max_samples": 100,
            "cutoff_len": cutoff,
            "per_device_train_batch_size": batch,
            "max_steps": 2,
            "lora_rank": 8,
            "lora_target": "all",
            "output_dir": str(tmp_path / "out"),
        }
    )
    tokenizer = load_tokenizer(config.model)
    data = load_sft_datasets(config, tokenizer, resolve_template("chatml", tokenizer), "sft")
    estimate = estimate_run(config, data.train, dtype=torch.float32, packing=False, log_table=False)
    assert estimate is not None and estimate.gradient_checkpointing is False
    peak = (estimate.peak - estimate.memory["runtime and data (measured)"]) / MIB + RUNTIME_MIB
    assert abs(peak - predicted) <= 0.02 * predicted  # the formula the record was made with
    assert abs(peak - measured) <= 0.20 * measured


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a shared 2-core machine under load takes minutes a step
def test_estimate_against_the_benchmarks_smollm2_lora_run(
    asset: Any, shared_data: Path, tmp_path: Path
) -> None:
    """bench/train.py's SmolLM2-135M LoRA row (alpaca_en_demo, batch 4, cutoff 512, fp32), 2 steps:
    the predicted peak within 20% of the measured RSS; both step times are printed (a shared
    machine's load makes the measured one noisy, so it is recorded, not asserted). The run is its
    own process, as a user's is: in the test runner the estimate's measured runtime part would be
    the runner's RSS after every earlier test."""
    import subprocess
    import sys

    import yaml

    values = {
        "model_name_or_path": str(asset("smollm2")),
        "template": "chatml",
        "dataset": "alpaca_en_demo",
        "dataset_dir": str(shared_data),
        "max_samples": 100,
        "cutoff_len": 512,
        "per_device_train_batch_size": 4,
        "max_steps": 2,
        "learning_rate": 1e-4,
        "lora_rank": 8,
        "lora_target": "all",
        "output_dir": str(tmp_path / "out"),
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "seed": 42,
    }
    cfg = tmp_path / "smollm2.yaml"
    cfg.write_text(yaml.safe_dump(values), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "lmforge", "train", str(cfg)], capture_output=True, text=True, timeout=3000
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "all_results.json").read_text(encoding="utf-8"))
    line = (
        f"smollm2 LoRA: peak {metrics['estimated_peak_mib']} predicted vs {metrics['peak_rss_mib']} MiB measured; "
        f"step {metrics['estimated_step_seconds']} s predicted vs {metrics['train_runtime'] / 2:.2f} s measured; "
        f"checkpointing {metrics['gradient_checkpointing']}, MFU {metrics['mfu']}"
    )
    print(line)
    # what glibc keeps of the freed temporaries varies (0.82-0.94x the activations on a loaded
    # machine, almost nothing on a quiet one): the measured peak lies between the estimate without
    # it and the estimate with it, each within 20%
    low, high, measured = (
        metrics["estimated_peak_low_mib"],
        metrics["estimated_peak_mib"],
        metrics["peak_rss_mib"],
    )
    assert 0.8 * low <= measured <= 1.2 * high, f"{line}; without the malloc part {low} MiB"
