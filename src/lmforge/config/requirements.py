"""Optional packages (and GPUs) that config keys need, checked before transformers imports them.

Without these checks a LLaMA-Factory config such as ``deepspeed: ds_z3_config.json`` on a machine
without DeepSpeed ends in transformers' ``PackageNotFoundError`` traceback; here it is one line
that names the key and the lmforge extra that installs the package.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmforge.config.finetuning import FinetuningArguments
from lmforge.config.model import ModelArguments
from lmforge.errors import ConfigError


@dataclass(frozen=True)
class OptionalPackage:
    distribution: str  # the name pip installs and importlib.metadata knows
    module: str  # the name Python imports
    extra: str  # lmforge's extra that installs it
    needs_gpu: bool = False  # no CPU build of the package works

    def installed(self) -> bool:
        try:
            importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return False
        return importlib.util.find_spec(self.module) is not None


DEEPSPEED = OptionalPackage("deepspeed", "deepspeed", "deepspeed", needs_gpu=True)
BITSANDBYTES = OptionalPackage("bitsandbytes", "bitsandbytes", "bnb")
FLASH_ATTN = OptionalPackage("flash-attn", "flash_attn", "flash-attn", needs_gpu=True)
LIGER = OptionalPackage("liger-kernel", "liger_kernel", "liger", needs_gpu=True)
GALORE = OptionalPackage("galore-torch", "galore_torch", "galore")
APOLLO = OptionalPackage("apollo-torch", "apollo_torch", "apollo")
BADAM = OptionalPackage("badam", "badam", "badam")
ADAM_MINI = OptionalPackage("adam-mini", "adam_mini", "adam-mini")
GPTQMODEL = OptionalPackage("gptqmodel", "gptqmodel", "gptq", needs_gpu=True)
RAY_TRAIN = OptionalPackage("ray", "ray", "ray")
TORCHAO = OptionalPackage("torchao", "torchao", "torchao")
SCHEDULEFREE = OptionalPackage("schedulefree", "schedulefree", "schedulefree")
LOMO = OptionalPackage("lomo-optim", "lomo_optim", "lomo")
GROKADAMW = OptionalPackage("grokadamw", "grokadamw", "grokadamw")

# transformers' ``optim`` names, by the package each needs (the rest are torch's own)
OPTIM_PACKAGES: dict[str, OptionalPackage] = {
    **{
        name: BITSANDBYTES
        for name in (
            "adamw_bnb_8bit",
            "adamw_8bit",
            "ademamix",
            "ademamix_8bit",
            "lion_8bit",
            "lion_32bit",
            "paged_adamw_32bit",
            "paged_adamw_8bit",
            "paged_ademamix_32bit",
            "paged_ademamix_8bit",
            "paged_lion_32bit",
            "paged_lion_8bit",
            "rmsprop_bnb",
            "rmsprop_bnb_8bit",
            "rmsprop_bnb_32bit",
            "galore_adamw_8bit",
            "galore_adamw_8bit_layerwise",
        )
    },
    **{
        name: GALORE
        for name in (
            "galore_adamw",
            "galore_adafactor",
            "galore_adamw_layerwise",
            "galore_adafactor_layerwise",
        )
    },
    "apollo_adamw": APOLLO,
    "apollo_adamw_layerwise": APOLLO,
    "adamw_torch_4bit": TORCHAO,
    "adamw_torch_8bit": TORCHAO,
    "schedule_free_radam": SCHEDULEFREE,
    "schedule_free_adamw": SCHEDULEFREE,
    "schedule_free_sgd": SCHEDULEFREE,
    "lomo": LOMO,
    "adalomo": LOMO,
    "grokadamw": GROKADAMW,
}

# ``report_to`` integrations, by the module transformers imports for each
REPORT_MODULES = {
    "wandb": "wandb",
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
    "comet_ml": "comet_ml",
    "clearml": "clearml",
    "neptune": "neptune",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
    "trackio": "trackio",
    "aim": "aim",
    "codecarbon": "codecarbon",
}


def require(package: OptionalPackage, key: str, value: object = True) -> None:
    """One line naming ``key`` and the extra to install when ``package`` is missing (or needs a GPU)."""
    setting = f"config key '{key}'" + ("" if value is True else f" ({key}: {value})")
    if not package.installed():
        raise ConfigError(
            f"{setting} needs the {package.distribution} package, which is not installed: "
            f"pip install 'lmforge[{package.extra}]'"
            + (" (on a machine with a CUDA GPU)" if package.needs_gpu else "")
        )
    if package.needs_gpu and not cuda_available():
        raise ConfigError(f"{setting} needs a CUDA GPU ({package.distribution}); none found on this machine")


def check_training_requirements(kwargs: Mapping[str, object]) -> None:
    """Every optional package the training keys name, checked before ``TrainingArguments`` is built."""
    deepspeed = kwargs.get("deepspeed")
    if deepspeed:
        if isinstance(deepspeed, str) and not Path(deepspeed).expanduser().is_file():
            raise ConfigError(f"config key 'deepspeed': DeepSpeed config file not found: {deepspeed}")
        require(DEEPSPEED, "deepspeed", deepspeed)
    optim = str(kwargs.get("optim") or "")
    if optim in OPTIM_PACKAGES:
        require(OPTIM_PACKAGES[optim], "optim", optim)
    if kwargs.get("use_liger_kernel"):
        require(LIGER, "use_liger_kernel")
    reports = kwargs.get("report_to")
    for name in [reports] if isinstance(reports, str) else reports if isinstance(reports, list) else []:
        module = REPORT_MODULES.get(name)
        if module and importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"config key 'report_to' ({name}) needs the {module} package, which is not installed: "
                f"pip install {module} (or report_to: none)"
            )


def check_model_requirements(model: ModelArguments) -> None:
    """The optional packages model loading needs (flash-attn, bitsandbytes)."""
    if model.flash_attn == "fa2":
        require(FLASH_ATTN, "flash_attn", "fa2")
    if model.quantization_bit is not None:
        if not cuda_available():
            raise ConfigError(
                "config key 'quantization_bit' (QLoRA) needs a CUDA GPU with bitsandbytes; "
                "remove it to train on the CPU"
            )
        require(BITSANDBYTES, "quantization_bit", model.quantization_bit)


OPTIMIZER_PACKAGES = {
    "use_galore": GALORE,
    "use_apollo": APOLLO,
    "use_badam": BADAM,
    "use_adam_mini": ADAM_MINI,
}


def check_optimizer_requirements(finetuning: FinetuningArguments) -> None:
    """The package of the optimizer option chosen (GaLore, APOLLO, BAdam, Adam-mini)."""
    for key, package in OPTIMIZER_PACKAGES.items():
        if getattr(finetuning, key):
            require(package, key)


def cuda_available() -> bool:
    # torch loads only when a key needs the answer, so parsing a config stays light
    import torch

    return torch.cuda.is_available()


def check_ray_requirements(ray_keys: Sequence[str]) -> None:
    """Ray Train, for a run that asks for it: ``ray_keys`` given in the config, or ``USE_RAY=1``."""
    if not RAY_TRAIN.installed():
        where = f"config key '{ray_keys[0]}'" if ray_keys else "USE_RAY=1"
        raise ConfigError(
            f"{where} trains through Ray Train, which is not installed: pip install 'lmforge[ray]'"
        )
