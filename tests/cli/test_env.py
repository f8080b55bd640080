"""The environment report's warnings for combinations known not to work."""

from __future__ import annotations

import copy

from lmforge.env import collect, format_report, warnings_for

BASE = {
    "python": "3.11.7",
    "nvcc": None,
    "gpus": [],
    "torch": {"version": "2.13.0+cpu", "cuda": None, "cudnn": None, "cuda_available": False},
    "libraries": {
        "transformers": "5.19.0",
        "vllm": "0.32.0",
        "deepspeed": None,
        "flash-attn": None,
        "bitsandbytes": None,
        "av": "18.1.0",
    },
}


def report(**changes):
    out = copy.deepcopy(BASE)
    for key, value in changes.items():
        if key in ("torch", "libraries"):
            out[key].update(value)
        else:
            out[key] = value
    return out


def test_cpu_machine_gets_only_the_no_gpu_note():
    warnings = warnings_for(report())
    assert len(warnings) == 1 and "no GPU found" in warnings[0]


def test_missing_pyav_is_named_with_the_extra_that_installs_it():
    warnings = warnings_for(report(libraries={"av": None}))
    assert any("av (PyAV) is not installed" in w and "lmforge[video]" in w for w in warnings)


def test_nvcc_and_torch_cuda_major_mismatch():
    gpu = [{"name": "H100", "memory_gib": 80, "driver": "580"}]
    warnings = warnings_for(
        report(
            nvcc="13.0", gpus=gpu, torch={"version": "2.13.0+cu128", "cuda": "12.8", "cuda_available": True}
        )
    )
    assert any("nvcc 13.0" in w and "12.8" in w for w in warnings)


def test_gpu_with_cpu_only_torch():
    warnings = warnings_for(report(gpus=[{"name": "A100", "memory_gib": 40, "driver": "550"}]))
    assert any("CPU-only build" in w for w in warnings)


def test_old_transformers_and_missing_vllm():
    warnings = warnings_for(report(libraries={"transformers": "4.57.1", "vllm": None}))
    assert any("transformers 4.57.1 is too old" in w for w in warnings)
    assert any("vllm is not installed" in w for w in warnings)


def test_gpu_only_libraries_without_a_gpu():
    warnings = warnings_for(report(libraries={"flash-attn": "2.8.0", "deepspeed": "0.16.0"}))
    assert any(w.startswith("flash-attn is installed but no GPU") for w in warnings)
    assert any("deepspeed is installed but nvcc is not" in w for w in warnings)


def test_real_report_formats_every_library():
    real = collect()
    text = format_report(real)
    for name in real["libraries"]:
        assert name in text
    assert "CUDA toolkit (nvcc)" in text
