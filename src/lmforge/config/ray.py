"""LLaMA-Factory's Ray Train keys: how many workers, what each takes, where Ray keeps its run.

LLaMA-Factory 0.9.2 reads these only with ``USE_RAY=1``; lmforge trains through Ray when that
variable is set or when the config sets any of these keys (a key that does nothing is refused
elsewhere in lmforge, so setting one is taken as asking for Ray).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from lmforge.errors import ConfigError

PlacementStrategy = Literal["SPREAD", "PACK", "STRICT_SPREAD", "STRICT_PACK"]


@dataclass
class RayArguments:
    ray_run_name: str | None = field(
        default=None,
        metadata={
            "help": "Ray: the name of Ray's run folder under ray_storage_path (Ray picks one if unset)."
        },
    )
    ray_storage_path: str = field(
        default="./saves",
        metadata={
            "help": "Ray: where Ray keeps its own run folder; checkpoints and the adapter go to output_dir."
        },
    )
    ray_num_workers: int = field(
        default=1,
        metadata={"help": "Ray: training processes (data-parallel workers) on the local Ray cluster."},
    )
    resources_per_worker: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Ray: what each worker takes, e.g. {GPU: 1} or {CPU: 2} (a mapping or JSON string); "
            "default one GPU where CUDA is available, else one CPU."
        },
    )
    placement_strategy: PlacementStrategy = field(
        default="PACK", metadata={"help": "Ray: how workers are placed on nodes (SPREAD, PACK, STRICT_*)."}
    )

    def __post_init__(self) -> None:
        if self.ray_num_workers < 1:
            raise ConfigError(f"config key 'ray_num_workers' must be at least 1, not {self.ray_num_workers}")
        for name, amount in (self.resources_per_worker or {}).items():
            if not isinstance(amount, int | float) or isinstance(amount, bool) or amount < 0:
                raise ConfigError(
                    f"config key 'resources_per_worker': {name!r} must be a non-negative number, not {amount!r}"
                )


RAY_KEYS = tuple(f.name for f in fields(RayArguments) if f.init)
