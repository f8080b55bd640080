"""LLaMA Pro block expansion: ``lmforge llama-pro MODEL OUTPUT --num_expand N``.

After every ``layers / N`` decoder layers a copy of the last one is inserted with its output
projections (``o_proj``, ``down_proj``) zeroed, so each new block adds nothing to the residual
stream and the expanded model computes exactly what the original did. Training it with
``finetuning_type: freeze``, ``use_llama_pro: true`` and ``freeze_trainable_layers: N`` then
updates only the new blocks (model/adapter.py picks them). The folder is a plain transformers
model: only ``num_hidden_layers`` (and ``layer_types``, where the config has one) change.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lmforge.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

logger = logging.getLogger(__name__)

_LAYER_KEY = re.compile(r"^(?P<prefix>.*\.layers\.)(?P<index>\d+)\.(?P<rest>.+)$")
ZEROED_PROJECTIONS = ("o_proj", "down_proj")


def expanded_source_layers(num_layers: int, num_expand: int) -> list[tuple[int, bool]]:
    """For each layer of the expanded model: (the original layer it copies, whether it is a new block)."""
    if num_expand <= 0 or num_layers % num_expand:
        raise ConfigError(
            f"num_expand must be a positive divisor of the model's {num_layers} layers, got {num_expand}"
        )
    split = num_layers // num_expand
    plan: list[tuple[int, bool]] = []
    for index in range(num_layers):
        plan.append((index, False))
        if (index + 1) % split == 0:
            plan.append((index, True))
    return plan


def expand_blocks(source: str, target: Path, num_expand: int, *, trust_remote_code: bool = False) -> Path:
    """Write the expanded model (and the tokenizer) to ``target``, through a temporary folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"output folder {target} is not empty; choose a new one")
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype="auto", trust_remote_code=trust_remote_code
        )
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the model from {source!r}: {str(exc).splitlines()[0]}") from None
    text_config = config.get_text_config()
    plan = expanded_source_layers(text_config.num_hidden_layers, num_expand)
    state = _expanded_state_dict(model.state_dict(), plan)
    _expand_config(text_config, plan)
    expanded = AutoModelForCausalLM.from_config(
        config, dtype=model.dtype, trust_remote_code=trust_remote_code
    )
    expanded.load_state_dict(state, strict=True)
    expanded.generation_config = model.generation_config

    staging = target.with_name(f".{target.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    expanded.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.rmdir()
    staging.rename(target)
    logger.info(
        "expanded %d layers to %d (new blocks: %s) in %s; train it with finetuning_type: freeze, "
        "use_llama_pro: true, freeze_trainable_layers: %d",
        len(plan) - num_expand,
        len(plan),
        ", ".join(str(i) for i, (_, new) in enumerate(plan) if new),
        target,
        num_expand,
    )
    return target


def _expanded_state_dict(
    state: dict[str, torch.Tensor], plan: list[tuple[int, bool]]
) -> dict[str, torch.Tensor]:
    by_layer: dict[int, list[tuple[str, str, torch.Tensor]]] = {}
    expanded: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        match = _LAYER_KEY.match(key)
        if match:
            by_layer.setdefault(int(match["index"]), []).append((match["prefix"], match["rest"], tensor))
        else:
            expanded[key] = tensor
    for new_index, (source, is_new) in enumerate(plan):
        zeroed = 0
        for prefix, rest, tensor in by_layer[source]:
            copy = tensor.clone()
            if is_new and rest.rsplit(".", 2)[-2] in ZEROED_PROJECTIONS:
                copy.zero_()
                zeroed += 1
            expanded[f"{prefix}{new_index}.{rest}"] = copy
        if is_new and zeroed < len(ZEROED_PROJECTIONS):
            raise ConfigError(
                f"LLaMA Pro expansion zeroes the layers' {' and '.join(ZEROED_PROJECTIONS)}; this architecture "
                "has no such projections"
            )
    return expanded


def _expand_config(text_config: PretrainedConfig, plan: list[tuple[int, bool]]) -> None:
    layer_types = getattr(text_config, "layer_types", None)
    if isinstance(layer_types, list) and layer_types:
        text_config.layer_types = [layer_types[source] for source, _ in plan]
    text_config.num_hidden_layers = len(plan)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lmforge llama-pro",
        description="Expand a model with identity blocks for LLaMA Pro training (use_llama_pro).",
    )
    parser.add_argument("model", help="the model folder (model_name_or_path)")
    parser.add_argument("output_dir", help="where to write the expanded model (a new folder)")
    parser.add_argument("--num_expand", "--num-expand", type=int, required=True, help="blocks to insert")
    parser.add_argument("--trust_remote_code", action="store_true")
    args = parser.parse_args(argv)
    expand_blocks(
        args.model, Path(args.output_dir), args.num_expand, trust_remote_code=args.trust_remote_code
    )
    return 0
