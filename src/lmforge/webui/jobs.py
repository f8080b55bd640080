"""Training runs started from the page: ``lmforge train config.yaml`` as child processes.

Each job gets a folder (``<workdir>/jobs/<id>``) holding the YAML it runs and its log. The
command is an argument list, never a shell string, so nothing typed into the page is ever
interpreted by a shell; the child starts its own session, so closing the browser (or the
page's connection dropping) leaves it running. Jobs are kept by the server, which is how a
reloaded page or a second tab finds them again. Stop sends SIGTERM: the trainer saves a
checkpoint after the current step and exits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.webui.settings import CheckedRun, to_yaml

LOG_NAME = "train.log"
CONFIG_NAME = "config.yaml"
PID_NAME = "pid"  # the child's process id, for whoever must find the run without this server
TRAINER_LOG = "trainer_log.jsonl"  # written by lmforge.train.callbacks.JsonlLog
ERROR_PREFIX = "lmforge train: error: "


@dataclass
class Progress:
    """What the trainer's log says so far."""

    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    remaining_seconds: float | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Job:
    id: str
    folder: Path
    output_dir: Path
    argv: list[str]
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.time)
    stop_requested: bool = False

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG_NAME

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_NAME

    def state(self) -> str:
        """running, finished, stopped (after Stop, checkpoint saved) or failed."""
        code = self.process.poll()
        if code is None:
            return "stopping" if self.stop_requested else "running"
        if code == 0:
            return "finished"
        if self.stop_requested and code == 128 + signal.SIGTERM:
            return "stopped"
        return "failed"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.stop_requested = True
            self.process.send_signal(signal.SIGTERM)

    def progress(self) -> Progress:
        progress = Progress()
        log = self.output_dir / TRAINER_LOG
        if not log.is_file():
            return progress
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written right now
            progress.step = int(record.get("current_steps", progress.step))
            progress.total_steps = int(record.get("total_steps", progress.total_steps))
            progress.remaining_seconds = record.get("remaining_time", progress.remaining_seconds)
            progress.tokens_per_second = record.get("tokens_per_second", progress.tokens_per_second)
            if isinstance(record.get("learning_rate"), int | float):
                progress.learning_rate = float(record["learning_rate"])
            if isinstance(record.get("loss"), int | float):
                progress.loss = float(record["loss"])
                progress.losses.append((progress.step, progress.loss))
        return progress

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the run's output (progress-bar redraws split into lines)."""
        if not self.log_path.is_file():
            return ""
        with self.log_path.open("rb") as handle:
            handle.seek(max(self.log_path.stat().st_size - 64_000, 0))
            text = handle.read().decode("utf-8", errors="replace")
        rows = [row for row in text.replace("\r", "\n").splitlines() if row.strip()]
        return "\n".join(rows[-lines:])

    def error(self) -> str | None:
        """The run's one-line error, once it failed."""
        if self.state() != "failed":
            return None
        tail = self.log_tail(400).splitlines()
        for row in reversed(tail):
            if row.startswith(ERROR_PREFIX):
                return row[len(ERROR_PREFIX) :]
        return tail[-1] if tail else f"exited with code {self.process.returncode}"


class JobManager:
    """Every job this server started, newest last; safe to use from several request threads."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, run: CheckedRun) -> Job:
        job_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        folder = self.workdir / "jobs" / job_id
        folder.mkdir(parents=True)
        config_path = folder / CONFIG_NAME
        staging = folder / f".{CONFIG_NAME}.tmp"
        staging.write_text(to_yaml(run.values), encoding="utf-8")
        os.replace(staging, config_path)
        argv = [sys.executable, "-m", "lmforge", "train", str(config_path)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with (folder / LOG_NAME).open("wb") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        (folder / PID_NAME).write_text(str(process.pid), encoding="utf-8")
        job = Job(job_id, folder, run.output_dir.resolve(), argv, process)
        with self._lock:
            self._jobs[job_id] = job
        return job

    def get(self, job_id: str | None) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id or "")

    def all(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def latest(self) -> Job | None:
        jobs = self.all()
        running = [job for job in jobs if job.process.poll() is None]
        return (running or jobs or [None])[-1]
