"""The reference model of DPO and KTO, without a second copy of the weights where none is needed.

Rules (issue 14, point 3):

- ``ref_model`` set: that model (with ``ref_model_adapters`` merged), frozen.
- LoRA from a base model: the base itself, with the adapter switched off (peft's ``disable_adapter``).
- LoRA continuing an SFT adapter (``adapter_name_or_path``): the SFT model, i.e. the base with
  the adapter as it was before training. The adapter is loaded a second time, frozen, under the
  name ``reference`` and switched to for reference passes (LLaMA-Factory uses the bare base here,
  #8459). With ``create_new_adapter`` the SFT adapters are merged into the base, so switching the
  new adapter off gives the SFT model again.
- Full or freeze fine-tuning: a frozen copy loaded from the same folder.
- orpo and simpo: no reference.

``precompute_ref_log_probs`` runs the reference once over the dataset before training; then
the frozen copy is released and no reference runs while training. The values are cached with
the encoded dataset (train/reference_cache.py): a rerun with the same data and reference
builds no reference at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from peft import PeftModel

from lmforge.config import Config
from lmforge.model.loader import load_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from lmforge.model.adapter import TrainableModel

logger = logging.getLogger(__name__)

REFERENCE_ADAPTER = "reference"
ReferenceKind = Literal["adapter_off", "sft_adapter", "frozen_model"]


@dataclass
class Reference:
    """Where reference log-probabilities come from during training."""

    kind: ReferenceKind
    model: PreTrainedModel | None = None  # frozen_model only

    @contextlib.contextmanager
    def active(self, policy: TrainableModel) -> Iterator[TrainableModel]:
        """Yield the model whose forward is the reference (no gradients inside)."""
        with torch.no_grad():
            if self.kind == "frozen_model":
                if self.model is None:
                    raise RuntimeError("the reference model was released; it runs no more")
                yield self.model
            elif self.kind == "adapter_off":
                with _peft(policy).disable_adapter():
                    yield policy
            else:
                peft_model = _peft(policy)
                active = peft_model.active_adapter
                peft_model.set_adapter(REFERENCE_ADAPTER, inference_mode=True)
                try:
                    yield peft_model
                finally:
                    peft_model.set_adapter(active)  # makes the trained adapter trainable again

    def release(self, policy: TrainableModel) -> None:
        """Drop the reference weights (after precomputing, and before the final save)."""
        if (
            self.kind == "sft_adapter"
            and isinstance(policy, PeftModel)
            and REFERENCE_ADAPTER in policy.peft_config
        ):
            policy.delete_adapter(REFERENCE_ADAPTER)
        self.model = None


def _peft(policy: TrainableModel) -> PeftModel:
    """The policy as PEFT's model: the adapter references switch its adapters."""
    if not isinstance(policy, PeftModel):
        raise TypeError(f"a LoRA reference needs the PEFT-wrapped policy, not {type(policy).__name__}")
    return policy


def reference_kind(config: Config) -> ReferenceKind:
    """Which rule above applies to ``config`` (known before any weights load)."""
    finetuning = config.finetuning
    if finetuning.ref_model or finetuning.finetuning_type != "lora":
        return "frozen_model"
    if config.model.adapter_name_or_path and not finetuning.create_new_adapter:
        return "sft_adapter"
    return "adapter_off"


def build_reference(config: Config, policy: TrainableModel, dtype: torch.dtype) -> Reference:
    """The reference for ``policy`` by the rules above (callers skip this for orpo/simpo)."""
    kind = reference_kind(config)
    if config.finetuning.ref_model:
        return Reference(kind, _load_frozen(config, dtype, from_ref_model=True))
    if kind == "sft_adapter":
        adapter = list(config.model.adapter_name_or_path or [])[-1]
        _peft(policy).load_adapter(adapter, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
        logger.info("reference: the SFT model (adapter %s, frozen copy)", adapter)
        return Reference(kind)
    if kind == "adapter_off":
        logger.info("reference: the base model with the adapter switched off")
        return Reference(kind)
    logger.info("reference: a frozen copy of %s", config.model.model_name_or_path)
    return Reference(kind, _load_frozen(config, dtype, from_ref_model=False))


def _load_frozen(config: Config, dtype: torch.dtype, *, from_ref_model: bool) -> PreTrainedModel:
    model_args = config.model
    if from_ref_model:
        model_args = dataclasses.replace(
            model_args,
            model_name_or_path=config.finetuning.ref_model,
            adapter_name_or_path=config.finetuning.ref_model_adapters,
            quantization_bit=config.finetuning.ref_model_quantization_bit,
        )
    model = load_model(model_args, config.finetuning, trainable=False, dtype=dtype)
    model.config.use_cache = False
    return model
