"""``FORCE_TORCHRUN=1 lmforge train ...``: relaunch the same command under torchrun.

torchrun starts one process per device and sets the variables (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR/PORT) that transformers and accelerate read; we add no process-group code.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys

from lmforge.config.environment import force_torchrun, torchrun_settings

logger = logging.getLogger(__name__)


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ


def torchrun_command(argv: list[str]) -> list[str]:
    """The torchrun command line that runs ``lmforge train argv`` on every process."""
    settings = torchrun_settings()
    nproc = settings["nproc_per_node"] or str(_device_count())
    port = settings["master_port"] or str(_free_port())
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        settings["nnodes"],
        "--node_rank",
        settings["node_rank"],
        "--nproc_per_node",
        nproc,
        "--master_addr",
        settings["master_addr"],
        "--master_port",
        port,
        "-m",
        "lmforge",
        "train",
        *argv,
    ]


def maybe_relaunch(argv: list[str]) -> int | None:
    """Run under torchrun when FORCE_TORCHRUN asks for it; None when this process should train itself."""
    if not force_torchrun() or under_torchrun():
        return None
    command = torchrun_command(argv)
    logger.info("relaunching under torchrun: %s", " ".join(command[1:]))
    return run_forwarding_signals(command)


def run_forwarding_signals(command: list[str]) -> int:
    """Run ``command`` and pass SIGTERM/SIGINT on to it, so that a Stop (the web UI, a scheduler)
    reaches the training processes behind torchrun and their checkpoint-on-signal path, instead of
    ending this wrapper and leaving them orphaned. The exit code is the child's (128+N for signal N)."""
    child = subprocess.Popen(command)
    forwarded = (signal.SIGTERM, signal.SIGINT)
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: child.send_signal(signum)) for sig in forwarded
    }
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def _device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
