"""torchrun on CPU (gloo): 2 processes with the same global batch follow the 1-process loss curve.

The 2-process run goes through `FORCE_TORCHRUN=1 lmforge train`, the way users start it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.cli import base_config, lmforge, write_dataset


def _losses(output_dir: Path) -> list[float]:
    lines = (output_dir / "trainer_log.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if '"loss"' in line]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tiny_model: Any, tmp_path: Path) -> None:
    write_dataset(tmp_path / "data", count=48)
    config = base_config(str(tiny_model("llama")), tmp_path, max_steps=4, train_sampling_strategy="random")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    single = lmforge(
        ["train", "cfg.yaml", "output_dir=single", "per_device_train_batch_size=4"], cwd=tmp_path
    )
    assert single.returncode == 0, single.stderr[-3000:]
    env = {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2", "OMP_NUM_THREADS": "1"}
    double = lmforge(
        ["train", "cfg.yaml", "output_dir=double", "per_device_train_batch_size=2"], tmp_path, env
    )
    assert double.returncode == 0, double.stderr[-3000:]
    assert "relaunching under torchrun" in double.stderr

    results = json.loads((tmp_path / "double" / "all_results.json").read_text())
    assert results["trained_samples"] == 16  # counted over both processes: 4 steps x global batch 4
    one, two = _losses(tmp_path / "single"), _losses(tmp_path / "double")
    assert len(one) == len(two) == 4
    for a, b in zip(one, two, strict=True):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (one, two)


@pytest.mark.slow
def test_sigterm_to_the_launcher_reaches_the_torchrun_workers(tiny_model: Any, tmp_path: Path) -> None:
    """A Stop sent to `lmforge train` (what the web UI does) stops the torchrun processes behind it
    through their checkpoint-on-signal path: a checkpoint is saved and no process is left behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    write_dataset(tmp_path / "data", count=48)
    config = base_config(
        str(tiny_model("llama")),
        tmp_path,
        max_steps=500,
        save_steps=1000,
        logging_steps=1,
        per_device_train_batch_size=2,
    )
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "FORCE_TORCHRUN": "1",
        "NPROC_PER_NODE": "2",
        "OMP_NUM_THREADS": "1",
    }
    launcher = subprocess.Popen(
        [sys.executable, "-m", "lmforge", "train", "cfg.yaml"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = tmp_path / "out" / "trainer_log.jsonl"
    deadline = time.monotonic() + 300
    while not (log.is_file() and '"loss"' in log.read_text()) and launcher.poll() is None:
        assert time.monotonic() < deadline, "the run logged no step within 300 s"
        time.sleep(0.5)
    workers = psutil.Process(launcher.pid).children(recursive=True)
    assert workers, "torchrun and its workers run as children of the launcher"
    launcher.send_signal(signal.SIGTERM)
    _, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode != 0 and launcher.returncode != -signal.SIGTERM, stderr[-3000:]
    assert list((tmp_path / "out").glob("checkpoint-*")), stderr[-3000:]
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"left behind: {[p.cmdline() for p in alive]}"
