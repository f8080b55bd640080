"""Training runs started from the page: ``lmforge train config.yaml`` as child processes.

Each job gets a folder (``<workdir>/jobs/<id>``) holding the YAML it runs, its log and a
small record (``job.json``: pid, output folder, stop asked, exit code), each written under a
temporary name and renamed. The command is an argument list, never a shell string, so
nothing typed into the page is ever interpreted by a shell; the child starts its own session,
so closing the browser (or the server stopping) leaves it running. The server keeps its jobs
in memory, which is how a reloaded page or a second tab finds them again, and a new server
on the same workdir reads the records back, so a restart lists the earlier jobs too. Stop
sends SIGTERM: the trainer saves a checkpoint after the current step and exits.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmforge.webui.form import CheckedRun, to_yaml

logger = logging.getLogger(__name__)

LOG_NAME = "train.log"
CONFIG_NAME = "config.yaml"
PID_NAME = "pid"  # the child's process id, for whoever must find the run without this server
RECORD_NAME = "job.json"  # what a later server needs to list the job again
TRAINER_LOG = "trainer_log.jsonl"  # written by lmforge.train.callbacks.JsonlLog
RESULTS_NAME = "all_results.json"  # written by a run that finished
ERROR_PREFIX = "lmforge train: error: "
STOPPED_LINE = "lmforge train: stopped early"  # printed by `lmforge train` after a signal
# How a run ends after our SIGTERM: 128+15 once the trainer's handler saved a checkpoint, -15
# when the signal came before the handler was installed (still loading, nothing to save).
STOP_CODES = (128 + signal.SIGTERM, -signal.SIGTERM)
# Files count as this run's when written after it started; the slack covers filesystems that
# keep whole seconds (or two, FAT) of modification time.
MTIME_SLACK_S = 2.0

State = Literal["running", "stopping", "finished", "stopped", "failed"]
STATES: tuple[State, ...] = ("running", "stopping", "finished", "stopped", "failed")


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


def _write_atomically(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass
class Job:
    """One run. ``process`` is None for a run an earlier server started (it is not our child)."""

    id: str
    folder: Path
    output_dir: Path
    argv: list[str]
    pid: int
    started: float = field(default_factory=time.time)
    stop_requested: bool = False
    returncode: int | None = None  # once the run ended and its parent saw the code
    process: subprocess.Popen[bytes] | None = None
    ended: bool = False
    _found_state: State | None = field(default=None, repr=False, compare=False)  # read once from files
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG_NAME

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_NAME

    # ------------------------------------------------------------ the record
    def save_record(self) -> None:
        record = {
            "id": self.id,
            "output_dir": str(self.output_dir),
            "argv": self.argv,
            "pid": self.pid,
            "started": self.started,
            "stop_requested": self.stop_requested,
            "returncode": self.returncode,
        }
        with self._lock:  # Stop (a request thread) and the exit (the watcher) may write at once
            _write_atomically(self.folder / RECORD_NAME, json.dumps(record, indent=1) + "\n")

    @classmethod
    def from_record(cls, folder: Path) -> Job:
        """The job a record describes; ValueError, KeyError, TypeError or OSError when it is unreadable."""
        record = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError("expected an object")
        code = record.get("returncode")
        return cls(
            id=str(record["id"]),
            folder=folder,
            output_dir=Path(record["output_dir"]),
            argv=[str(arg) for arg in record["argv"]],
            pid=int(record["pid"]),
            started=float(record["started"]),
            stop_requested=bool(record.get("stop_requested")),
            returncode=int(code) if code is not None else None,
            ended=code is not None,
        )

    def _finish(self, code: int | None) -> None:
        """Note that the run ended (once), with its exit code where known."""
        with self._lock:
            if self.ended:
                return
            self.ended, self.returncode = True, code
        if code is not None:
            self.save_record()

    def watch(self) -> None:
        """Record the exit code as soon as the child ends, whether or not a page is looking."""
        process = self.process
        if process is None:
            return

        def wait() -> None:
            self._finish(process.wait())

        threading.Thread(target=wait, name=f"job-{self.id}", daemon=True).start()

    # ------------------------------------------------------------ state
    def running(self) -> bool:
        if self.ended:
            return False
        if self.process is not None:
            code = self.process.poll()
            if code is None:
                return True
            self._finish(code)
            return False
        if _is_our_run(self.pid, self.argv[-1]):
            return True
        self._finish(None)  # it ended while no server of ours was its parent: the code is lost
        return False

    def state(self) -> State:
        """running, stopping, finished, stopped (after Stop) or failed."""
        if self.running():
            return "stopping" if self.stop_requested else "running"
        code = self.returncode
        if code is None:
            if self._found_state is None:
                self._found_state = self._state_from_files()
            return self._found_state
        if code == 0:
            return "finished"
        if self.stop_requested and code in STOP_CODES:
            return "stopped"
        return "failed"

    def _state_from_files(self) -> State:
        """How a run ended whose exit code nobody saw: what it printed and wrote."""
        if STOPPED_LINE in self.log_tail(20):
            return "stopped"
        results = self.output_dir / RESULTS_NAME
        if results.is_file() and self._written_since_start(results):
            return "finished"
        if self.stop_requested and not self.error_line():
            return "stopped"  # stopped while it was still loading
        return "failed"

    def stop(self) -> None:
        if not self.running():
            return
        self.stop_requested = True
        self.save_record()
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
        else:
            os.kill(self.pid, signal.SIGTERM)

    def _written_since_start(self, path: Path) -> bool:
        """Whether a file in the output folder is this run's, not an earlier run's into the same folder."""
        return path.stat().st_mtime >= self.started - MTIME_SLACK_S

    def checkpoint(self) -> Path | None:
        """The newest checkpoint this run saved."""
        found = [
            path
            for path in self.output_dir.glob("checkpoint-*")
            if path.is_dir() and self._written_since_start(path)
        ]
        return max(found, key=lambda path: path.stat().st_mtime) if found else None

    # ------------------------------------------------------------ what it wrote
    def progress(self) -> Progress:
        progress = Progress()
        log = self.output_dir / TRAINER_LOG
        if not log.is_file() or not self._written_since_start(log):
            return progress
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written right now
            if not isinstance(record, dict):
                continue
            progress.step = int(_number(record.get("current_steps")) or progress.step)
            progress.total_steps = int(_number(record.get("total_steps")) or progress.total_steps)
            remaining = _number(record.get("remaining_time"))
            speed = _number(record.get("tokens_per_second"))
            progress.remaining_seconds = remaining if remaining is not None else progress.remaining_seconds
            progress.tokens_per_second = speed if speed is not None else progress.tokens_per_second
            learning_rate = _number(record.get("learning_rate"))
            if learning_rate is not None:
                progress.learning_rate = learning_rate
            loss = _number(record.get("loss"))
            if loss is not None:
                progress.loss = loss
                progress.losses.append((progress.step, loss))
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

    def error_line(self) -> str | None:
        """The ``lmforge train: error:`` line the run printed, if any."""
        for row in reversed(self.log_tail(400).splitlines()):
            if row.startswith(ERROR_PREFIX):
                return row[len(ERROR_PREFIX) :]
        return None

    def error(self) -> str | None:
        """The run's one-line error, once it failed."""
        if self.state() != "failed":
            return None
        found = self.error_line()
        if found:
            return found
        tail = self.log_tail(1)
        if tail:
            return tail
        return f"exited with code {self.returncode}" if self.returncode is not None else "exited"


def _is_our_run(pid: int, config_path: str) -> bool:
    """Whether ``pid`` is still this job's ``lmforge train`` (not a later process given the same id)."""
    if not Path("/proc/self").exists():  # no /proc (macOS): all we can tell is that the id is taken
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True
    proc = Path(f"/proc/{pid}")
    try:
        if (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            return False  # ended, waiting for its parent to read the code
        return config_path.encode() in (proc / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False


class JobManager:
    """Every job started on this workdir, oldest first; safe to use from several request threads."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()  # the child runs an absolute config path, found again by it
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._read_records()

    def _read_records(self) -> None:
        """List again the jobs an earlier server on this workdir started."""
        for record in sorted((self.workdir / "jobs").glob(f"*/{RECORD_NAME}")):
            try:
                job = Job.from_record(record.parent)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning(
                    "%s: not a job record this web UI can read (%s); the job is not listed", record, exc
                )
                continue
            self._jobs[job.id] = job

    def start(self, run: CheckedRun) -> Job:
        job_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        folder = self.workdir / "jobs" / job_id
        folder.mkdir(parents=True)
        config_path = folder / CONFIG_NAME
        _write_atomically(config_path, to_yaml(run.values))
        argv = [sys.executable, "-m", "lmforge", "train", str(config_path)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        started = time.time()
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
        job = Job(job_id, folder, run.output_dir.resolve(), argv, process.pid, started, process=process)
        job.save_record()
        job.watch()
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
        """The newest running job, else the newest job."""
        jobs = self.all()
        running = [job for job in jobs if job.running()]
        chosen = running or jobs
        return chosen[-1] if chosen else None
