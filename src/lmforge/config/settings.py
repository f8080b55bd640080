"""The settings of one run: a dataclass per concern, plus transformers' training arguments."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.config.data import DataArguments
from lmforge.config.evaluation import EvaluationArguments
from lmforge.config.finetuning import FinetuningArguments
from lmforge.config.generating import GeneratingArguments
from lmforge.config.hardware import cpu_bf16_support
from lmforge.config.model import ModelArguments
from lmforge.config.ray import RayArguments
from lmforge.config.requirements import (
    check_model_requirements,
    check_optimizer_requirements,
    check_training_requirements,
    cuda_available,
)
from lmforge.config.rules import check_training_rules
from lmforge.config.serving import ServingArguments
from lmforge.errors import ConfigError

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments

logger = logging.getLogger(__name__)

# each concern's name is the attribute of Config that holds it, and its group in `--help keys`
CONCERNS: dict[str, type] = {
    "model": ModelArguments,
    "data": DataArguments,
    "finetuning": FinetuningArguments,
    "generating": GeneratingArguments,
    "serving": ServingArguments,
    "evaluation": EvaluationArguments,  # lmforge eval (issue 17)
    "ray": RayArguments,  # training through Ray Train (issue 18)
}


@dataclass
class Config:
    """All settings of one run, grouped by concern."""

    model: ModelArguments = field(default_factory=ModelArguments)
    data: DataArguments = field(default_factory=DataArguments)
    finetuning: FinetuningArguments = field(default_factory=FinetuningArguments)
    generating: GeneratingArguments = field(default_factory=GeneratingArguments)
    serving: ServingArguments = field(default_factory=ServingArguments)
    evaluation: EvaluationArguments = field(default_factory=EvaluationArguments)  # lmforge eval
    ray: RayArguments = field(default_factory=RayArguments)
    ray_keys: tuple[str, ...] = ()
    """The ray keys the config sets (any of them asks for Ray Train)."""
    uses_ray: bool = False
    """Train through Ray Train: the config sets a ray key, or ``USE_RAY=1`` (LLaMA-Factory's switch)."""
    training_kwargs: dict[str, Any] = field(default_factory=dict)
    """Typed values for transformers' Seq2SeqTrainingArguments, as the user gave them."""
    source: Path | None = None

    def training_arguments(self) -> Seq2SeqTrainingArguments:
        """Build transformers' training arguments (imports transformers; train only).

        What only training needs (max_steps with a stream, a GPU for QLoRA, the optional
        packages the keys name) is checked here, before any output is written.
        """
        # transformers loads torch and its trainer stack: too heavy for `lmforge version` or chat's import
        from transformers import Seq2SeqTrainingArguments

        check_training_rules(self)
        check_model_requirements(self.model)
        check_training_requirements(self.training_kwargs)
        check_optimizer_requirements(self.finetuning)
        kwargs = dict(self.training_kwargs)
        _fall_back_from_half_precision(kwargs)
        try:
            return Seq2SeqTrainingArguments(**kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"training settings: {exc}") from None


def _fall_back_from_half_precision(kwargs: dict[str, object]) -> None:
    """``bf16``/``fp16`` on a machine without a GPU: keep bf16 where the CPU computes it natively,
    otherwise warn and train in fp32 instead of crashing.

    A tutorial config written for a GPU should still run on a laptop; fp32 gives the same
    result, only slower. docs/design.md records this choice.
    """
    if cuda_available():
        return
    if kwargs.get("fp16"):
        logger.warning("fp16: true needs a GPU (CPUs have no fast fp16 training); training runs in fp32")
        kwargs["fp16"] = False
    if kwargs.get("bf16"):
        support = cpu_bf16_support()
        if support.native:
            logger.info("bf16: mixed precision on the CPU (%s)", support.detail)
        else:
            logger.warning(
                "bf16: true needs a GPU or a CPU with native bf16; %s: training runs in fp32", support.detail
            )
            kwargs["bf16"] = False
