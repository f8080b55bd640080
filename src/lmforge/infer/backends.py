"""The choice between inference backends (``infer_backend``), kept apart from the interface.

Both backends import :mod:`lmforge.infer.engine`; only this module knows them both, so no
backend imports another and none imports the chooser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmforge.config import Config
    from lmforge.infer.engine import Engine


def create_engine(config: Config) -> Engine:
    """Build the backend the config names (``infer_backend``)."""
    if config.serving.infer_backend == "vllm":
        # why here: vllm is optional, and its module is only importable where vllm is installed
        from lmforge.infer.vllm_engine import VllmEngine

        return VllmEngine.from_config(config)
    # why here: torch loads only once an engine is built, not when the web UI or the CLI starts
    from lmforge.infer.hf_engine import HuggingFaceEngine

    return HuggingFaceEngine.from_config(config)
