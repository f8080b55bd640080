"""``lmforge train cfg.yaml [key=value ...]``: train, then exit 0; a signal exits 128+signum after saving."""

from __future__ import annotations

from lmforge.config import load_config
from lmforge.train.launch import maybe_relaunch


def main(argv: list[str]) -> int:
    config = load_config(argv)  # a bad config stops here, before torchrun starts any process
    relaunched = maybe_relaunch(argv)
    if relaunched is not None:
        return relaunched
    from lmforge.train.workflow import run_training

    outcome = run_training(config)
    if outcome.interrupted_by:
        print(f"lmforge train: stopped early; resume with resume_from_checkpoint={outcome.checkpoint}")
    return outcome.exit_code
