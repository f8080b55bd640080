"""Decide which weights train: LoRA/DoRA/rsLoRA through PEFT, freeze (the last N layers), or full.

LLaMA-Factory's keys keep their meaning: ``lora_target: all`` means every linear layer but the
output head, ``lora_alpha`` defaults to twice the rank, ``adapter_name_or_path`` continues
training the last adapter (after merging the earlier ones) unless ``create_new_adapter`` asks for
a fresh one on top of them all. Trainable weights are kept in float32 (unless ``pure_bf16``) so
optimizer updates do not vanish in half precision.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model, prepare_model_for_kbit_training
from torch import nn

from lmforge.config.finetuning import FinetuningArguments
from lmforge.config.model import ModelArguments
from lmforge.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    TrainableModel: TypeAlias = PreTrainedModel | PeftModel  # a transformers model, or PEFT's wrapper of one

logger = logging.getLogger(__name__)

_LAYER_PATTERN = re.compile(r"\.(?:layers|h|blocks|block)\.(\d+)\.")


def prepare_trainable(
    model: TrainableModel,
    model_args: ModelArguments,
    finetuning_args: FinetuningArguments,
    *,
    gradient_checkpointing: bool = False,
) -> TrainableModel:
    """Return the model to train, with exactly the parameters the config asks for set trainable."""
    kind = finetuning_args.finetuning_type  # the keys' combinations were checked at load (config/rules.py)
    if getattr(model, "is_quantized", False) or getattr(model, "quantization_method", None):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if kind == "full":
        model.requires_grad_(True)
        for name, param in model.named_parameters():
            if frozen_media_module(name, finetuning_args):
                param.requires_grad_(False)
    elif kind == "freeze":
        _freeze_all_but(model, finetuning_args)
    else:
        model = _apply_lora(model, model_args, finetuning_args)
    if not finetuning_args.pure_bf16:
        for param in model.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()
    if gradient_checkpointing and kind != "full" and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()  # checkpointed blocks need a grad-carrying input
    trainable, total = count_parameters(model)
    logger.info(
        "%s: %s trainable parameters of %s (%.4f%%)",
        kind,
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
    )
    if trainable == 0:
        raise ConfigError(f"finetuning_type {kind}: no parameter is trainable with these settings")
    return model


def enable_gradient_checkpointing(model: TrainableModel, settings: dict[str, Any] | None) -> None:
    """Recompute each block's activations in backward, with transformers' ``gradient_checkpointing_kwargs``.

    The model is checkpointed here, once its training form is settled, rather than by the Trainer:
    whether to checkpoint is decided by the estimate, after the training arguments are built.
    ``every_n_layers`` and ``offload`` are transformers' own keys, the rest goes to ``torch.utils.checkpoint``.
    """
    kwargs = dict(settings or {})
    every_n_layers = kwargs.pop("every_n_layers", 1)
    offload = kwargs.pop("offload", False)
    model.gradient_checkpointing_enable(
        gradient_checkpointing_kwargs=kwargs or None, every_n_layers=every_n_layers, offload=offload
    )


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def _freeze_all_but(model: nn.Module, args: FinetuningArguments) -> None:
    names = [name for name, _ in model.named_parameters()]
    layer_ids = sorted({int(m.group(1)) for name in names if (m := _LAYER_PATTERN.search(name))})
    if not layer_ids:
        raise ConfigError(
            "finetuning_type freeze: this model has no numbered layers to unfreeze; use lora or full"
        )
    count = args.freeze_trainable_layers
    if not args.use_llama_pro and (count == 0 or abs(count) > len(layer_ids)):
        raise ConfigError(
            f"config key 'freeze_trainable_layers' must be between -{len(layer_ids)} and {len(layer_ids)} and not 0 "
            f"(positive: the last N layers, negative: the first N), got {count}"
        )
    if args.use_llama_pro:
        chosen = set(expanded_layer_ids(len(layer_ids), count))
    else:
        chosen = set(layer_ids[-count:] if count > 0 else layer_ids[:-count])
    modules = [m for m in args.freeze_trainable_modules if m != "all"]
    if modules:
        known = _layer_module_names(names)
        missing = [m for m in modules if m not in known]
        if missing:
            raise ConfigError(
                f"config key 'freeze_trainable_modules': {', '.join(missing)} not found in the layers; "
                f"choose from: all, {', '.join(sorted(known))}"
            )
    extras = list(args.freeze_extra_modules or [])
    if extras:
        outside = {part for name in names if not _LAYER_PATTERN.search(name) for part in name.split(".")[:-1]}
        missing = [m for m in extras if m not in outside]
        if missing:
            raise ConfigError(
                f"config key 'freeze_extra_modules': {', '.join(missing)} not found outside the layers; "
                f"choose from: {', '.join(sorted(outside))}"
            )
    for name, param in model.named_parameters():
        match = _LAYER_PATTERN.search(name)
        if match:
            in_layer = int(match.group(1)) in chosen
            module_ok = not modules or any(f".{m}." in name[match.end() - 1 :] for m in modules)
            param.requires_grad_(in_layer and module_ok)
        else:
            param.requires_grad_(any(f".{m}." in f".{name}" for m in extras))


def expanded_layer_ids(num_layers: int, num_expanded: int) -> range:
    """The blocks LLaMA Pro's expansion inserted: the last of every ``num_layers / num_expanded`` layers."""
    if num_expanded <= 0 or num_layers % num_expanded:
        raise ConfigError(
            f"use_llama_pro: freeze_trainable_layers ({num_expanded}) must be the number of expanded blocks, "
            f"a positive divisor of the model's {num_layers} layers (the num_expand of `lmforge llama-pro`)"
        )
    stride = num_layers // num_expanded
    return range(stride - 1, num_layers, stride)


def _layer_module_names(names: list[str]) -> set[str]:
    """Sub-module names directly inside a layer (self_attn, mlp, input_layernorm, ...)."""
    found = set()
    for name in names:
        match = _LAYER_PATTERN.search(name)
        if match:
            rest = name[match.end() :].split(".")
            if len(rest) > 1:
                found.add(rest[0])
    return found


def _apply_lora(
    model: TrainableModel, model_args: ModelArguments, args: FinetuningArguments
) -> TrainableModel:
    adapters = list(model_args.adapter_name_or_path or [])
    for adapter in adapters:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise ConfigError(
                f"adapter_name_or_path {adapter!r} is not a PEFT adapter folder (no adapter_config.json)"
            )
    to_merge = adapters if args.create_new_adapter else adapters[:-1]
    for adapter in to_merge:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        logger.info("merged adapter %s into the base", adapter)
    if adapters and not args.create_new_adapter:
        logger.info("continuing to train adapter %s", adapters[-1])
        return PeftModel.from_pretrained(model, adapters[-1], is_trainable=True)

    targets = list(args.lora_target)
    target_modules: str | list[str] = "all-linear" if targets == ["all"] else targets
    if "all" in targets and len(targets) > 1:
        raise ConfigError("config key 'lora_target': use either 'all' or module names, not both")
    if target_modules != "all-linear":
        linear = _linear_module_names(model)
        missing = [t for t in targets if t not in linear]
        if missing:
            raise ConfigError(
                f"config key 'lora_target': {', '.join(missing)} not found among the model's linear layers; "
                f"choose from: all, {', '.join(sorted(linear))}"
            )
    parts = {part for name, _ in model.named_modules() for part in name.split(".")}
    excluded = [pattern for pattern, frozen in _media_module_patterns(args) if frozen and pattern in parts]
    lora_config = LoraConfig(
        # the towers sit at the root of some models (Qwen2.5-Omni's thinker: ``visual.``, ``audio_tower.``)
        exclude_modules=rf"(.*\.)?({'|'.join(excluded)})\..*" if excluded else None,
        # a sequence classifier (reward model) saves its score head with the adapter (modules_to_save)
        task_type=TaskType.SEQ_CLS if _is_sequence_classifier(model) else TaskType.CAUSAL_LM,
        r=args.lora_rank,
        lora_alpha=args.lora_alpha if args.lora_alpha is not None else 2 * args.lora_rank,
        lora_dropout=args.lora_dropout,
        target_modules=target_modules,
        modules_to_save=list(args.additional_target) if args.additional_target else None,
        use_rslora=args.use_rslora,
        use_dora=args.use_dora,
        # peft's Literal spells pissa_niter_<N> as "pissa_niter_[number of iters]"
        init_lora_weights=_lora_initialisation(args),  # type: ignore[arg-type]
    )
    try:
        return get_peft_model(model, lora_config)
    except ValueError as exc:
        raise ConfigError(f"LoRA set-up failed: {str(exc).splitlines()[0]}") from None


def _is_sequence_classifier(model: nn.Module) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


def _lora_initialisation(args: FinetuningArguments) -> bool | str:
    """PEFT's ``init_lora_weights``: PiSSA (the weights' principal singular vectors) when asked for."""
    if not args.pissa_init:
        return True
    return "pissa" if args.pissa_iter == -1 else f"pissa_niter_{args.pissa_iter}"


PISSA_INIT_DIR = "pissa_init"


def save_pissa_initial(model: TrainableModel, args: FinetuningArguments, output_dir: Path) -> Path | None:
    """Save the PiSSA adapter before training: converting the trained one to plain LoRA needs it."""
    if not (args.finetuning_type == "lora" and args.pissa_init and args.pissa_convert):
        return None
    folder = output_dir / PISSA_INIT_DIR
    model.save_pretrained(str(folder))
    return folder


def save_converted_pissa(model: TrainableModel, folder: Path, initial: Path) -> None:
    """Overwrite the saved adapter in ``folder`` with its plain-LoRA form (rank doubled), which loads on
    the original base model in plain PEFT; PEFT computes it from the adapter before and after training."""
    model.save_pretrained(str(folder), path_initial_model_for_weight_conversion=str(initial))
    logger.info("pissa_convert: the adapter in %s is a plain LoRA adapter of the original base model", folder)


# Parameter-name parts of multimodal towers and projectors (Qwen2-VL keeps its merger, the
# projector, inside ``visual``), and the LLaMA-Factory key that freezes each.
def _media_module_patterns(args: FinetuningArguments) -> list[tuple[str, bool]]:
    return [
        ("visual", args.freeze_vision_tower),
        ("vision_tower", args.freeze_vision_tower),
        ("audio_tower", args.freeze_vision_tower),
        ("multi_modal_projector", args.freeze_multi_modal_projector),
    ]


def frozen_media_module(name: str, args: FinetuningArguments) -> bool:
    """True for a parameter of a tower or projector the config keeps frozen (LLaMA-Factory's defaults)."""
    parts = name.split(".")
    return any(pattern in parts and frozen for pattern, frozen in _media_module_patterns(args))


def _linear_module_names(model: nn.Module) -> set[str]:
    return {
        name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)
    }
