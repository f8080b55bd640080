"""Paths and inputs shared by the benchmark scripts, so both tools get byte-identical work.

Imported by scripts that run in lmforge's venv and, through ``sys.path``, by the driver that runs
inside LLaMA-Factory's venv: standard library only.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
SHARED_DATA = Path(os.environ.get("LMFORGE_BENCH_DATA", REPO.parent / "shared" / "data"))
LMFORGE_PYTHON = REPO / ".venv" / "bin" / "python"
LLAMAFACTORY_VENV = Path(os.environ.get("LLAMAFACTORY_VENV", BENCH / ".venvs" / "llamafactory"))
LLAMAFACTORY_PYTHON = LLAMAFACTORY_VENV / "bin" / "python"
LLAMAFACTORY_CLI = LLAMAFACTORY_VENV / "bin" / "llamafactory-cli"

PREPROCESS_SAMPLES = 50_000
PREPROCESS_SOURCE = "alpaca_zh_demo"


def replicated_dataset(
    n_samples: int = PREPROCESS_SAMPLES, source: str = PREPROCESS_SOURCE
) -> tuple[Path, str]:
    """Write ``source`` repeated to ``n_samples`` records into its own dataset folder.

    Returns ``(dataset_dir, dataset_name)``: a folder with a ``dataset_info.json`` that both tools
    read as usual. The file is rewritten only when missing, so its mtime does not bust caches.
    """
    info = json.loads((SHARED_DATA / "dataset_info.json").read_text(encoding="utf-8"))
    entry = dict(info[source])
    records = json.loads((SHARED_DATA / entry["file_name"]).read_text(encoding="utf-8"))
    name = f"{source}_{n_samples}"
    folder = OUT / "data"
    folder.mkdir(parents=True, exist_ok=True)
    data_file = folder / f"{name}.json"
    if not data_file.exists():
        repeated = [records[i % len(records)] for i in range(n_samples)]
        tmp = data_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(repeated, ensure_ascii=False), encoding="utf-8")
        tmp.replace(data_file)
    entry["file_name"] = data_file.name
    info_file = folder / "dataset_info.json"
    wanted = {name: entry}
    current = json.loads(info_file.read_text(encoding="utf-8")) if info_file.exists() else {}
    if current.get(name) != entry:
        current.update(wanted)
        tmp = info_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(current, indent=2, ensure_ascii=False), encoding="utf-8")
        tmp.replace(info_file)
    return folder, name


def machine_description() -> str:
    """One line naming the CPU, core count and memory, for the RESULTS.md header."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, {mem_gib:.0f} GiB RAM, {platform.system()} {platform.release()}"


def load_average() -> str:
    """The 1/5/15-minute load averages, recorded beside each figure: the CPU is shared."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def package_version(python: Path, package: str) -> str:
    """Version of ``package`` as installed in the environment of ``python`` (or "missing")."""
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    return out.stdout.strip() if out.returncode == 0 else "missing"
