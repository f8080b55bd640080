"""LLaMA-Factory's optimizer keys through the optimizers' own packages.

GaLore and APOLLO go through transformers' own wiring (``optim: galore_adamw`` / ``apollo_adamw``
with ``optim_target_modules`` and ``optim_args``); LoRA+ (PEFT's ``create_loraplus_optimizer``),
BAdam and Adam-mini are built here and handed to the Trainer through its public ``optimizers=``
argument, so its scheduler, checkpoints and logging stay transformers' own.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from peft import PeftModel
from peft.optimizers import create_loraplus_optimizer
from torch import nn
from transformers import Trainer

from lmforge.config import Config
from lmforge.config.finetuning import FinetuningArguments
from lmforge.errors import ConfigError

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments

    from lmforge.model.adapter import TrainableModel

logger = logging.getLogger(__name__)

OUTPUT_HEADS = ("lm_head", "embed_out", "output")
# transformers matches a string target against each module's full name (only linear ones count)
ALL_BUT_HEADS = rf"(?!(?:.*\.)?(?:{'|'.join(OUTPUT_HEADS)})$).+"


def optimizer_arguments(config: Config) -> dict[str, Any]:
    """GaLore/APOLLO as transformers' ``optim``, ``optim_target_modules`` and ``optim_args`` (else nothing).

    ``galore_target: all`` becomes a pattern for every linear layer but the output head (as for
    LoRA), so the arguments follow from the config alone; named targets are checked against the
    model once it is loaded (:func:`configure_optimizer`).
    """
    finetuning = config.finetuning
    method = "galore" if finetuning.use_galore else "apollo" if finetuning.use_apollo else None
    if method is None:
        return {}
    layerwise = getattr(finetuning, f"{method}_layerwise")
    targets = list(getattr(finetuning, f"{method}_target"))
    settings: dict[str, object] = {
        "rank": getattr(finetuning, f"{method}_rank"),
        "update_proj_gap": getattr(finetuning, f"{method}_update_interval"),
        "scale": getattr(finetuning, f"{method}_scale"),
        "proj_type": getattr(finetuning, f"{method}_proj_type"),
    }
    if method == "apollo":
        settings.update(proj=finetuning.apollo_proj, scale_type=finetuning.apollo_scale_type)
        if finetuning.apollo_scale_front:
            logger.warning("apollo_scale_front is not among transformers' APOLLO settings; it is not applied")
    arguments = {
        "optim": f"{method}_adamw" + ("_layerwise" if layerwise else ""),
        "optim_target_modules": ALL_BUT_HEADS if targets == ["all"] else targets,
        "optim_args": ",".join(f"{key}={value}" for key, value in settings.items()),
    }
    logger.info("optimizer: %s on %s (%s)", arguments["optim"], ", ".join(targets), arguments["optim_args"])
    return arguments


def configure_optimizer(
    config: Config, args: Seq2SeqTrainingArguments, model: TrainableModel
) -> torch.optim.Optimizer | None:
    """Build LoRA+/BAdam/Adam-mini, or check GaLore/APOLLO's named targets; None: transformers builds ``args.optim``."""
    finetuning = config.finetuning
    if finetuning.use_galore:
        _check_targets(model, finetuning.galore_target, "galore")
    elif finetuning.use_apollo:
        _check_targets(model, finetuning.apollo_target, "apollo")
    elif finetuning.loraplus_lr_ratio is not None:
        return _loraplus(args, model, finetuning, finetuning.loraplus_lr_ratio)
    elif finetuning.use_badam:
        return _badam(args, model, finetuning)
    elif finetuning.use_adam_mini:
        return _adam_mini(args, model)
    return None


def _check_targets(model: nn.Module, targets: list[str], method: str) -> None:
    """Each named target is among the model's linear layers (``all`` always is)."""
    linear = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] not in OUTPUT_HEADS
    }
    if list(targets) == ["all"]:
        return
    missing = [t for t in targets if t not in linear]
    if missing:
        raise ConfigError(
            f"config key '{method}_target': {', '.join(missing)} not found among the model's linear layers; "
            f"choose from: all, {', '.join(sorted(linear))}"
        )


def _loraplus(
    args: Seq2SeqTrainingArguments, model: TrainableModel, finetuning: FinetuningArguments, ratio: float
) -> torch.optim.Optimizer:
    if not isinstance(model, PeftModel):
        raise ConfigError("config key 'loraplus_lr_ratio' needs finetuning_type: lora")
    # transformers annotates PreTrainedModel; it reads the model only for GaLore/APOLLO/LOMO, never LoRA+
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)  # type: ignore[arg-type]
    optimizer_kwargs = {k: v for k, v in optimizer_kwargs.items() if k != "lr"}
    logger.info("optimizer: LoRA+ (B learning rate %s x A's)", ratio)
    return create_loraplus_optimizer(
        model,
        optimizer_cls,
        lr=args.learning_rate,
        loraplus_lr_ratio=ratio,
        loraplus_lr_embedding=finetuning.loraplus_lr_embedding,
        weight_decay=args.weight_decay,
        **optimizer_kwargs,
    )


def _badam(
    args: Seq2SeqTrainingArguments, model: TrainableModel, finetuning: FinetuningArguments
) -> torch.optim.Optimizer:
    """BAdam (layer mode): Adam on one block of layers at a time, switching every ``badam_switch_interval`` steps."""
    from badam import BlockOptimizer  # optional: installed by those who use it

    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    decay = [p for n, p in named if p.ndim >= 2]
    no_decay = [p for n, p in named if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    logger.info(
        "optimizer: BAdam, layer mode (%s, every %d steps)",
        finetuning.badam_switch_mode,
        finetuning.badam_switch_interval,
    )
    return BlockOptimizer(
        base_optimizer=torch.optim.AdamW(
            groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
        ),
        named_parameters_list=list(model.named_parameters()),
        block_prefix_list=None,
        switch_block_every=finetuning.badam_switch_interval,
        start_block=finetuning.badam_start_block,
        switch_mode=finetuning.badam_switch_mode,
        verbose=finetuning.badam_verbose,
        log_fn=logger.info,
    )


def _adam_mini(args: Seq2SeqTrainingArguments, model: TrainableModel) -> torch.optim.Optimizer:
    """Adam-mini: one second-moment value per parameter block (per attention head), not per weight."""
    from adam_mini import Adam_mini  # optional: installed by those who use it

    text_config = model.config.get_text_config()
    heads = text_config.num_attention_heads
    logger.info("optimizer: Adam-mini")
    return Adam_mini(
        named_parameters=[(n, p) for n, p in model.named_parameters() if p.requires_grad],
        lr=args.learning_rate,
        weight_decay=args.weight_decay,
        dim=text_config.hidden_size,
        n_heads=heads,
        n_kv_heads=getattr(text_config, "num_key_value_heads", None) or heads,
        verbose=False,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in the optimizer's state tensors (layer-wise optimizers: summed over their parts)."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    parts = getattr(optimizer, "optimizer_dict", None)
    optimizers = list(parts.values()) if parts else [getattr(optimizer, "base_optimizer", optimizer)]
    seen: set[int] = set()
    total = 0
    for part in optimizers:
        for state in part.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor) and id(value) not in seen:
                    seen.add(id(value))
                    total += value.numel() * value.element_size()
    return total
