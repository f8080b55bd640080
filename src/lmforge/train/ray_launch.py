"""Training through Ray Train: ``lmforge train`` with a ray key (or ``USE_RAY=1``).

The run starts a local Ray cluster, and Ray Train's ``TorchTrainer`` starts ``ray_num_workers``
workers, sets up their torch process group (gloo on the CPU, nccl on GPUs) and the RANK/WORLD_SIZE
variables, as torchrun does; each worker then runs the very training ``lmforge train`` runs
under torchrun, so the result (checkpoints, adapter, trainer_log.jsonl, all_results.json in
output_dir) is the same. Ray keeps only its own run folder under ``ray_storage_path``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.config import Config, load_config
from lmforge.config.requirements import check_ray_requirements, cuda_available
from lmforge.errors import ConfigError, LmforgeError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOutcome:
    output_dir: Path
    exit_code: int
    ray_run_folder: str


def worker_resources(config: Config) -> tuple[dict[str, float], bool]:
    """What each worker takes and whether it uses a GPU: the config's, else a GPU where CUDA is
    available and a CPU otherwise (LLaMA-Factory always asks for a GPU)."""
    given = config.ray.resources_per_worker
    if given:
        resources = {name: float(amount) for name, amount in given.items()}
    else:
        resources = {"GPU": 1.0} if cuda_available() else {"CPU": 1.0}
    use_gpu = resources.get("GPU", 0.0) > 0
    if use_gpu and not cuda_available():
        # Ray would wait for a GPU no node has, forever
        raise ConfigError(
            f"config key 'resources_per_worker' ({given}) asks for a GPU per worker and this machine has "
            "no CUDA GPU; set resources_per_worker: {CPU: 1} to train on CPU workers"
        )
    return resources, use_gpu


def run_with_ray(config: Config, argv: list[str]) -> RayOutcome:
    """Train ``argv`` (the command's arguments) on ``ray_num_workers`` Ray Train workers."""
    check_ray_requirements(config.ray_keys)
    # ray loads only for a run that asks for it: it is an optional extra and slow to import
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources, use_gpu = worker_resources(config)
    workers = config.ray.ray_num_workers
    storage = Path(config.ray.ray_storage_path).expanduser().absolute()
    # the cluster is sized to the request: CPUs are counted, not reserved, so a small machine
    # can still run two one-CPU workers (they share its cores)
    cpus = max(
        os.cpu_count() or 1, math.ceil(workers * resources.get("CPU", 1.0 if not use_gpu else 0.0)) + 1
    )
    logger.info("starting a local Ray cluster (%d CPUs) for %d workers of %s", cpus, workers, resources)
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING, configure_logging=False)
    try:
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={"argv": list(argv), "cwd": os.getcwd()},
            scaling_config=ScalingConfig(
                num_workers=workers,
                use_gpu=use_gpu,
                resources_per_worker=resources,
                placement_strategy=config.ray.placement_strategy,
            ),
            run_config=RunConfig(name=config.ray.ray_run_name, storage_path=storage.as_posix()),
        )
        try:
            result = trainer.fit()
        except Exception as exc:  # Ray wraps the worker's error with its traceback
            raise LmforgeError(f"training through Ray failed: {_first_line(exc)}") from None
    finally:
        ray.shutdown()
    metrics: dict[str, Any] = dict(result.metrics or {})
    return RayOutcome(
        output_dir=Path(str(config.training_kwargs.get("output_dir", "."))).absolute(),
        exit_code=int(metrics.get("exit_code", 0)),
        ray_run_folder=str(result.path),
    )


def _train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: the training ``lmforge train`` runs in each torchrun process."""
    import ray.train

    from lmforge.train import run_training

    os.chdir(loop_config["cwd"])  # relative paths in the config mean what they mean for the user
    outcome = run_training(load_config(loop_config["argv"]))
    # every worker reports (Ray waits for all); the driver returns the exit code
    ray.train.report({"exit_code": outcome.exit_code})


def _first_line(exc: BaseException) -> str:
    """The root cause's message, not Ray's wrapped traceback."""
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1].strip() if lines else ''}"
