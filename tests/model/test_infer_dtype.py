"""``infer_dtype``: ``auto`` loads bf16 on a CPU that computes it natively and fp32 on one that
emulates it (the detection training uses, faked both ways), explicit dtypes keep their meaning,
float16 on a CPU falls back in one line; the vllm backend and ``lmforge env`` say the same."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

from lmforge import env
from lmforge.config import build_config
from lmforge.infer.vllm_engine import engine_arguments
from lmforge.model.loader import load_model, resolve_dtype
from tests.helpers.hardware import CAPABLE, INCAPABLE, fake_cpu_report


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Factory: a machine without a GPU whose CPU reports ``report``."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def use(report: dict[str, Any]) -> None:
        fake_cpu_report(monkeypatch, report)

    return use


def test_auto_is_bf16_where_the_cpu_computes_it_and_fp32_where_it_emulates_it(cpu: Any) -> None:
    cpu(CAPABLE)
    assert resolve_dtype("auto") == torch.bfloat16
    cpu({**INCAPABLE, "avx512_bf16": True})  # Zen 4: AVX512-BF16 without AMX
    assert resolve_dtype("auto") == torch.bfloat16
    cpu(INCAPABLE)
    assert resolve_dtype("auto") == torch.float32


@pytest.mark.parametrize("report", [CAPABLE, INCAPABLE], ids=["native", "emulated"])
def test_explicit_dtypes_keep_their_meaning(cpu: Any, report: dict[str, Any]) -> None:
    cpu(report)
    assert resolve_dtype("bfloat16") == torch.bfloat16
    assert resolve_dtype("float32") == torch.float32


def test_float16_on_a_cpu_falls_back_to_fp32_in_one_line(cpu: Any, caplog: pytest.LogCaptureFixture) -> None:
    cpu(CAPABLE)
    with caplog.at_level(logging.WARNING):
        assert resolve_dtype("float16") == torch.float32
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "infer_dtype: float16" in warnings[0] and "float32" in warnings[0]


def test_a_model_loads_for_inference_in_the_dtype_auto_picks(cpu: Any, tiny_model: Any) -> None:
    """What serving, chat, prediction and export load (they all go through load_model)."""
    settings = {"model_name_or_path": str(tiny_model("llama")), "template": "chatml"}
    cpu(CAPABLE)
    model = load_model(build_config(settings).model, trainable=False)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    cpu(INCAPABLE)
    model = load_model(build_config(settings).model, trainable=False)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_vllm_gets_the_same_dtype(cpu: Any) -> None:
    def dtype(infer_dtype: str) -> str:
        config = build_config(
            {"model_name_or_path": "m", "infer_backend": "vllm", "infer_dtype": infer_dtype}
        )
        return str(engine_arguments(config, "m")["dtype"])

    cpu(CAPABLE)
    assert dtype("auto") == "bfloat16"
    assert dtype("float32") == "float32"
    cpu(INCAPABLE)
    assert dtype("auto") == "float32"  # not vLLM's own auto: the checkpoint's bf16, emulated here
    assert dtype("bfloat16") == "bfloat16"
    assert dtype("float16") == "float32"


def test_env_says_what_auto_picks(cpu: Any) -> None:
    cpu(CAPABLE)
    report = env.collect()
    assert report["torch"]["infer_dtype_auto"]["name"] == "bfloat16"
    assert "bfloat16 for chat, serving, prediction, export (Fake Xeon computes bf16 natively" in (
        env.format_report(report)
    )
    cpu(INCAPABLE)
    report = env.collect()
    assert report["torch"]["infer_dtype_auto"]["name"] == "float32"
    assert "float32 for chat, serving, prediction, export (Fake EPYC has neither" in env.format_report(report)
