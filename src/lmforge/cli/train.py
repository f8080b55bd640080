"""``lmforge train cfg.yaml [key=value ...]``: train, then exit 0; a signal exits 128+signum after saving.

With ``do_predict`` the run then predicts with the model it trained; ``do_predict`` without
``do_train`` (LLaMA-Factory's prediction configs) only predicts.
"""

from __future__ import annotations

from pathlib import Path

from lmforge.config import load_config
from lmforge.predict.run import (
    is_main_process,
    predicts_only,
    run_prediction,
    trained_config,
    wants_prediction,
)
from lmforge.train.launch import maybe_relaunch


def main(argv: list[str]) -> int:
    config = load_config(argv)  # a bad config stops here, before torchrun starts any process
    if predicts_only(config):
        run_prediction(config)
        return 0
    if config.uses_ray:
        from lmforge.train.ray_launch import run_with_ray  # ray and the training stack: only here

        on_ray = run_with_ray(config, argv)
        print(
            f"lmforge train: trained through Ray; outputs in {on_ray.output_dir}, Ray's run in {on_ray.ray_run_folder}"
        )
        if on_ray.exit_code == 0 and wants_prediction(config):
            run_prediction(trained_config(config, on_ray.output_dir))
        return on_ray.exit_code
    relaunched = maybe_relaunch(argv)
    if relaunched is not None:
        return relaunched
    # the training stack (transformers' Trainer, peft) loads only in the process that trains,
    # not in the parent that relaunches under torchrun nor for a prediction-only run
    from lmforge.train import run_training

    outcome = run_training(config)
    if outcome.interrupted_by:
        print(f"lmforge train: stopped early; resume with resume_from_checkpoint={outcome.checkpoint}")
    elif wants_prediction(config) and is_main_process():
        run_prediction(trained_config(config, Path(outcome.output_dir)))
    return outcome.exit_code
