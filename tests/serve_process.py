"""Run ``lmforge api`` as a real child process for the serving tests (used by the api_server fixture)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiServer:
    """A context manager: writes the config, starts the server, waits for its "serving" line."""

    def __init__(
        self,
        settings: dict[str, Any],
        folder: Path,
        *,
        env: dict[str, str],
        python: str | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.config = folder / "serve.yaml"
        self.config.write_text(yaml.safe_dump(settings), encoding="utf-8")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.root = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        self.env = {
            **os.environ,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.port),
            "HF_HUB_OFFLINE": "1",
            **env,
        }
        self.python = python or sys.executable
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    def __enter__(self) -> ApiServer:
        self.proc = subprocess.Popen(
            [self.python, "-m", "lmforge", "api", str(self.config)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            with self.log.open("w", encoding="utf-8") as out:
                for line in self.proc.stdout:
                    self.lines.append(line)
                    out.write(line)
                    out.flush()
                    if line.startswith("lmforge api: serving"):
                        ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout_s
        while not ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError("lmforge api did not start:\n" + "".join(self.lines[-40:]))
        return self

    def output(self) -> str:
        return "".join(self.lines)

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
