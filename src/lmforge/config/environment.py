"""Every environment variable lmforge reads, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import ConfigError


@dataclass(frozen=True)
class ServerEnvironment:
    host: str
    port: int
    api_key: str | None
    model_name: str | None


def server_environment() -> ServerEnvironment:
    """``API_HOST`` (default 127.0.0.1), ``API_PORT`` (8000), ``API_KEY``, ``API_MODEL_NAME``."""
    raw_port = os.environ.get("API_PORT", "8000")
    try:
        port = int(raw_port)
    except ValueError:
        raise ConfigError(f"environment variable API_PORT={raw_port!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"environment variable API_PORT={port} is outside 0-65535")
    return ServerEnvironment(
        host=os.environ.get("API_HOST", "127.0.0.1"),
        port=port,
        api_key=os.environ.get("API_KEY") or None,
        model_name=os.environ.get("API_MODEL_NAME") or None,
    )


def cache_dir() -> Path:
    """``LMFORGE_CACHE``, default ``~/.cache/lmforge``."""
    return Path(os.environ.get("LMFORGE_CACHE", Path.home() / ".cache" / "lmforge")).expanduser()


def force_torchrun() -> bool:
    """``FORCE_TORCHRUN=1`` makes ``lmforge train`` relaunch itself under torchrun."""
    return os.environ.get("FORCE_TORCHRUN", "0").lower() in ("1", "true", "yes")


def use_ray() -> bool:
    """``USE_RAY=1`` (LLaMA-Factory's switch) makes ``lmforge train`` train through Ray Train."""
    return os.environ.get("USE_RAY", "0").lower() in ("1", "true", "yes")


def torchrun_settings() -> dict[str, str]:
    """``NNODES``, ``NODE_RANK``, ``NPROC_PER_NODE``, ``MASTER_ADDR``, ``MASTER_PORT`` for multi-node jobs."""
    return {
        "nnodes": os.environ.get("NNODES", "1"),
        "node_rank": os.environ.get("NODE_RANK", "0"),
        "nproc_per_node": os.environ.get("NPROC_PER_NODE", ""),
        "master_addr": os.environ.get("MASTER_ADDR", "127.0.0.1"),
        "master_port": os.environ.get("MASTER_PORT", ""),
    }


def cpu_threads_pinned() -> bool:
    """True when ``OMP_NUM_THREADS`` is set: the user chose torch's CPU thread count."""
    return bool(os.environ.get("OMP_NUM_THREADS"))
