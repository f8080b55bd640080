"""``lmforge train``: supervised fine-tuning (sft) and pre-training (pt) on transformers' Trainer."""

from lmforge.train.workflow import PreparedData, TrainingOutcome, run_training

__all__ = ["PreparedData", "TrainingOutcome", "run_training"]
