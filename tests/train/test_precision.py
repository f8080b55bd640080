"""bf16 on the CPU: detection (both answers, by faking torch's CPU report), mixed-precision state
dtypes after a real step, and the loss curve against fp32 on SmolLM2."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback

from lmforge.config import build_config, hardware
from tests.helpers.hardware import CAPABLE, INCAPABLE, fake_cpu_report
from tests.helpers.training import settings, train


@pytest.fixture
def fake_cpu(monkeypatch: pytest.MonkeyPatch) -> Any:
    def use(report: dict[str, Any]) -> None:
        fake_cpu_report(monkeypatch, report)

    return use


def test_detection_reads_torchs_cpu_report_both_ways(fake_cpu: Any) -> None:
    fake_cpu(CAPABLE)
    support = hardware.cpu_bf16_support()
    assert support.native and "amx_bf16" in support.detail and "Fake Xeon" in support.detail
    fake_cpu({**INCAPABLE, "avx512_bf16": True})  # Zen 4: AVX512-BF16 without AMX
    assert hardware.cpu_bf16_support().native
    fake_cpu(INCAPABLE)
    support = hardware.cpu_bf16_support()
    assert not support.native
    assert "neither AMX-BF16 nor AVX512-BF16" in support.detail and "Fake EPYC" in support.detail


def test_real_report_matches_the_cpu_flags() -> None:
    """The unfaked answer agrees with what the kernel lists in /proc/cpuinfo."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo")
    flags = set(cpuinfo.read_text().split())
    assert hardware.cpu_bf16_support().native == bool(flags & {"amx_bf16", "avx512_bf16"})


def test_bf16_kept_on_a_capable_cpu_and_dropped_with_the_reason_elsewhere(
    fake_cpu: Any, caplog: pytest.LogCaptureFixture
) -> None:
    values = {"output_dir": "out", "bf16": True, "use_cpu": True}
    fake_cpu(CAPABLE)
    assert build_config(values).training_arguments().bf16 is True
    fake_cpu(INCAPABLE)
    with caplog.at_level(logging.WARNING):
        assert build_config(values).training_arguments().bf16 is False
    assert "neither AMX-BF16 nor AVX512-BF16" in caplog.text and "fp32" in caplog.text


def test_fp16_on_a_cpu_falls_back_in_one_line(fake_cpu: Any, caplog: pytest.LogCaptureFixture) -> None:
    fake_cpu(CAPABLE)
    with caplog.at_level(logging.WARNING):
        args = build_config({"output_dir": "out", "fp16": True, "use_cpu": True}).training_arguments()
    assert args.fp16 is False and args.bf16 is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    assert "fp16: true needs a GPU" in warnings[0].getMessage()


class DtypesAfterStep(TrainerCallback):
    """Record parameter and optimizer-state dtypes once the first optimizer step is done."""

    def __init__(self) -> None:
        self.frozen: set[torch.dtype] = set()
        self.trainable: set[torch.dtype] = set()
        self.states: set[torch.dtype] = set()

    def on_step_end(
        self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None, **kw: Any
    ) -> None:
        if state.global_step != 1:
            return
        for param in model.parameters():
            (self.trainable if param.requires_grad else self.frozen).add(param.dtype)
        for per_param in optimizer.state.values():
            self.states |= {v.dtype for v in per_param.values() if torch.is_tensor(v) and v.dim() > 0}


@pytest.mark.parametrize("finetuning_type", ["lora", "full"])
def test_mixed_precision_keeps_trainable_and_optimizer_state_in_fp32(
    fake_cpu: Any, tiny_model: Any, tmp_path: Path, finetuning_type: str
) -> None:
    fake_cpu(CAPABLE)
    seen = DtypesAfterStep()
    values = settings(
        str(tiny_model("llama")),
        tmp_path / "out",
        bf16=True,
        max_steps=1,
        save_steps=10,
        finetuning_type=finetuning_type,
    )
    outcome = train(values, callbacks=[seen])
    assert outcome.metrics["global_step"] == 1
    assert seen.trainable == {torch.float32}
    assert seen.states == {torch.float32}  # Adam's moments
    if finetuning_type == "lora":
        assert seen.frozen == {torch.bfloat16}  # the base is held in bf16, not cast at every step


def _losses(model_dir: str, out: Path, **extra: Any) -> list[float]:
    values = settings(
        model_dir,
        out,
        per_device_train_batch_size=1,
        max_steps=20,
        save_steps=100,
        learning_rate=1e-4,
        lora_rank=8,
        **extra,
    )
    train(values)
    import json

    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    return [entry["loss"] for entry in log if "loss" in entry][:20]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_bf16_losses_stay_within_two_percent_of_fp32_on_smollm2(
    fake_cpu: Any, asset: Any, tmp_path: Path
) -> None:
    """Runs where bf16 is native; emulated bf16 (AMD EPYC without AVX512-BF16) took over 15 minutes
    for these 20 steps on 2 cores, more than the whole CI budget allows for one test."""
    from lmforge.config.hardware import cpu_bf16_support

    support = cpu_bf16_support()
    if not support.native:
        pytest.skip(f"needs a CPU with native bf16: {support.detail}")
    model_dir = str(asset("smollm2"))
    fp32 = _losses(model_dir, tmp_path / "fp32")
    fake_cpu(CAPABLE)
    bf16 = _losses(model_dir, tmp_path / "bf16", bf16=True)
    assert len(fp32) == len(bf16) == 20
    for step, (a, b) in enumerate(zip(fp32, bf16, strict=True)):
        assert abs(a - b) <= 0.02 * abs(a), f"step {step + 1}: fp32 {a:.4f} vs bf16 {b:.4f}"


def test_env_reports_cpu_bf16_and_matmul_rates(fake_cpu: Any) -> None:
    from lmforge import env

    fake_cpu(CAPABLE)
    report = env.collect()
    assert report["torch"]["cpu_bf16"]["native"] is True
    text = env.format_report(report)
    assert "CPU bf16" in text and "native: Fake Xeon" in text
    rates = report["torch"]["cpu_matmul_gflops"]
    assert set(rates) == {"float32", "bfloat16"} and all(rate > 0 for rate in rates.values())
    assert "bf16 runs natively" in " ".join(report["warnings"])
    fake_cpu(INCAPABLE)
    assert "lacks native bf16" in " ".join(env.warnings_for(env.collect()))
