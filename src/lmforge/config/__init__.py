"""Typed settings, one dataclass per concern, with LLaMA-Factory's key names."""

from lmforge.config.data import DataArguments
from lmforge.config.evaluation import EvaluationArguments
from lmforge.config.finetuning import FinetuningArguments
from lmforge.config.generating import GeneratingArguments
from lmforge.config.model import ModelArguments
from lmforge.config.parser import build_config, load_config, parse_cli
from lmforge.config.serving import ServingArguments
from lmforge.config.settings import Config

__all__ = [
    "Config",
    "DataArguments",
    "EvaluationArguments",
    "FinetuningArguments",
    "GeneratingArguments",
    "ModelArguments",
    "ServingArguments",
    "build_config",
    "load_config",
    "parse_cli",
]
