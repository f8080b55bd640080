"""What this machine computes fast: bf16 on the CPU, matmul rates per dtype, free memory, cores.

The training precision, the memory/time estimate and the serving thread count all decide from
these facts, so they are read in one place; tests fake :func:`cpu_features` (torch's report of
the CPU) to see both answers of the bf16 detection on any machine.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# instruction sets that multiply bf16 in hardware (Intel AMX, AVX512-BF16 on Xeon since Cooper/Sapphire
# Rapids and AMD Zen 4+); without them torch emulates bf16 matmuls in software, slower than fp32
NATIVE_BF16_FEATURES = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Bf16Support:
    native: bool
    detail: str
    """What was found (``amx_bf16``) or what is missing, in words a warning can carry."""


def cpu_features() -> Mapping[str, object]:
    """torch's report of the CPU's instruction sets (``torch.cpu.get_capabilities()``); {} if unavailable."""
    import torch  # here and below: torch loads only when a fact is asked for, not with the config

    try:
        return torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):  # torch before 2.8, or a build without cpuinfo
        return {}


def cpu_name() -> str:
    name = cpu_features().get("cpu_name")
    if name:
        return str(name)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(errors="replace"), re.MULTILINE)
        if match:
            return match.group(1).strip()
    return "this CPU"


def cpu_bf16_support() -> Bf16Support:
    """Whether this CPU multiplies bf16 natively (AMX-BF16 or AVX512-BF16), from torch's report."""
    features = cpu_features()
    found = [name for name in NATIVE_BF16_FEATURES if features.get(name)]
    if found:
        return Bf16Support(True, f"{cpu_name()} computes bf16 natively ({', '.join(found)})")
    return Bf16Support(
        False, f"{cpu_name()} has neither AMX-BF16 nor AVX512-BF16, so bf16 would be emulated (slower)"
    )


@dataclass(frozen=True)
class InferenceDtype:
    name: str
    """The torch dtype's name (``bfloat16``, ``float32``...), what both backends are given."""
    reason: str
    """Why, in words ``lmforge env`` and a fallback warning can carry."""


def inference_dtype(requested: str) -> InferenceDtype:
    """What ``infer_dtype: requested`` loads the weights in on this machine.

    ``auto`` takes the fast dtype of the hardware, by the same detection training uses: bf16 on a
    GPU that has it (else fp16), bf16 on a CPU that computes it natively, fp32 on other CPUs (an
    emulated bf16 matmul is slower than fp32). ``float16`` without a GPU falls back to fp32, as
    ``fp16: true`` does in training; ``bfloat16`` and ``float32`` are kept as asked.
    """
    import torch  # only when a model is about to load (or env asks)

    gpu = torch.cuda.is_available()
    if requested == "auto":
        if gpu:
            if torch.cuda.is_bf16_supported():
                return InferenceDtype("bfloat16", "the GPU computes bf16")
            return InferenceDtype("float16", "the GPU lacks bf16")
        support = cpu_bf16_support()
        return InferenceDtype("bfloat16" if support.native else "float32", support.detail)
    if requested == "float16" and not gpu:
        return InferenceDtype("float32", "float16 needs a GPU (CPUs have no fast fp16)")
    return InferenceDtype(requested, "as infer_dtype asks")


def matmul_rate(
    dtype: torch.dtype, shape: tuple[int, int, int] = (256, 256, 256), budget_s: float = 0.1
) -> float:
    """GFLOP/s of ``[m, k] @ [k, n]`` in ``dtype`` on this CPU, timed for about ``budget_s`` seconds."""
    return _measured_rate(str(dtype).removeprefix("torch."), shape, budget_s)


@cache
def _measured_rate(dtype_name: str, shape: tuple[int, int, int], budget_s: float) -> float:
    import torch  # only when measured

    dtype = getattr(torch, dtype_name)
    m, k, n = shape
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    a @ b  # warm-up: first call picks kernels and allocates
    runs, start = 0, time.perf_counter()
    while True:
        a @ b
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget_s:
            return 2 * m * k * n * runs / elapsed / 1e9


@cache
def module_call_seconds(runs: int = 200) -> float:
    """Seconds of one small module's forward and backward: the fixed cost every layer pays per
    step whatever its size (Python, dispatch, autograd), which dominates small models on a CPU."""
    import torch  # only when measured

    layer = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8)
    layer(x).sum().backward()
    start = time.perf_counter()
    for _ in range(runs):
        layer(x).sum().backward()
    return (time.perf_counter() - start) / runs


def memory_bytes() -> tuple[int | None, int | None]:
    """(total, available) system memory in bytes from /proc/meminfo; None where it cannot be read."""
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        return None, None
    text = meminfo.read_text()
    values = {key: int(kib) * 1024 for key, kib in re.findall(r"^(\w+):\s+(\d+) kB", text, re.MULTILINE)}
    return values.get("MemTotal"), values.get("MemAvailable")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
