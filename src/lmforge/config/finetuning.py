"""Training stage and adapter settings (LLaMA-Factory key names), plus output handling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class FinetuningArguments:
    stage: Literal["sft", "pt"] = field(
        default="sft", metadata={"help": "sft (supervised) or pt (pre-training)."}
    )
    finetuning_type: Literal["lora", "freeze", "full"] = "lora"
    # lora
    lora_rank: int = 8
    lora_alpha: int | None = field(default=None, metadata={"help": "Defaults to 2 * lora_rank."})
    lora_dropout: float = 0.0
    lora_target: list[str] = field(
        default_factory=lambda: ["all"], metadata={"help": "`all` linear layers, or module names."}
    )
    additional_target: list[str] | None = None
    use_rslora: bool = False
    use_dora: bool = False
    create_new_adapter: bool = False
    # freeze
    freeze_trainable_layers: int = 2
    freeze_trainable_modules: list[str] = field(default_factory=lambda: ["all"])
    freeze_extra_modules: list[str] | None = None
    # multimodal parts
    freeze_vision_tower: bool = True
    freeze_multi_modal_projector: bool = True
    freeze_language_model: bool = False
    # misc
    pure_bf16: bool = False
    compute_accuracy: bool = False
    disable_shuffling: bool = False
    plot_loss: bool = False
    include_effective_tokens_per_second: bool = False
    chunked_loss: bool = field(
        default=True,
        metadata={
            "help": "Cross-entropy in chunks, without the full [tokens, vocab] logits, where it is exact."
        },
    )
    # speed (issue 15): checkpointing only when the estimate says the run needs it
    gradient_checkpointing: bool | Literal["auto"] = field(
        default="auto",
        metadata={
            "help": "auto (default): on only when the memory estimate says the run would not fit without "
            "it; true/false force it. LLaMA-Factory turns it on unless disable_gradient_checkpointing."
        },
    )
    # output handling that transformers 5 dropped from TrainingArguments
    overwrite_output_dir: bool = False
    logging_dir: str | None = None
