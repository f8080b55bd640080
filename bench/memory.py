"""Wall time and peak resident memory of a child process, measured from outside it.

Every row of the comparison runs each tool as its own process, so both are measured the same
way: ``os.wait4`` returns the kernel's own peak RSS (``ru_maxrss``) for exactly that child,
including anything it spawned and waited for, with no sampling that could miss a short spike.

As a command: ``python bench/memory.py [--repeats N] -- CMD ARGS...`` prints wall time and
peak RSS of each run and their medians.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    """One finished child process: exit code, wall seconds, peak RSS in MiB and its output."""

    returncode: int
    wall_s: float
    peak_rss_mib: float
    stdout: str
    stderr: str

    def check(self, what: str) -> Measured:
        """Raise with the tail of stderr when the child failed, so a broken row is never recorded."""
        if self.returncode != 0:
            tail = "\n".join((self.stderr or self.stdout).splitlines()[-25:])
            raise RuntimeError(f"{what} exited with {self.returncode}:\n{tail}")
        return self


def _drain(stream, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


def run_measured(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout_s: float | None = None,
) -> Measured:
    """Run ``cmd`` to completion; return its wall time and the kernel's peak RSS for it.

    Output is collected on threads so a chatty child never blocks on a full pipe. On timeout the
    whole process group is killed and the result carries return code -9.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=_drain, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    timer = None
    if timeout_s is not None:
        timer = threading.Timer(timeout_s, lambda: _kill_group(proc.pid))
        timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        if timer is not None:
            timer.cancel()
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join(timeout=10)
    # Linux reports ru_maxrss in KiB.
    return Measured(proc.returncode, wall, usage.ru_maxrss / 1024.0, "".join(out), "".join(err))


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("give a command after --")
    walls, peaks = [], []
    for i in range(args.repeats):
        m = run_measured(cmd)
        walls.append(m.wall_s)
        peaks.append(m.peak_rss_mib)
        print(f"run {i + 1}: rc={m.returncode} wall={m.wall_s:.3f}s peak_rss={m.peak_rss_mib:.1f} MiB")
    print(f"median: wall={statistics.median(walls):.3f}s peak_rss={statistics.median(peaks):.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
