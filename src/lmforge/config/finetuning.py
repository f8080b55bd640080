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
    # LoRA variants through PEFT (issue 18): PiSSA initialisation, LoRA+ learning rates
    pissa_init: bool = field(default=False, metadata={"help": "Initialise LoRA from the weights' SVD (PiSSA)."})
    pissa_iter: int = field(default=16, metadata={"help": "Fast-SVD iterations for PiSSA; -1 for a full SVD."})
    pissa_convert: bool = field(
        default=False, metadata={"help": "Save the PiSSA adapter as a plain LoRA adapter of the original base."}
    )
    loraplus_lr_ratio: float | None = field(
        default=None, metadata={"help": "LoRA+: learning rate of the B matrices over that of A."}
    )
    loraplus_lr_embedding: float = 1e-6
    # optimizers through their own packages (issue 18): GaLore, APOLLO, BAdam, Adam-mini
    use_galore: bool = False
    galore_target: list[str] = field(default_factory=lambda: ["all"])
    galore_rank: int = 16
    galore_update_interval: int = 200
    galore_scale: float = 2.0
    galore_proj_type: Literal["std", "reverse_std", "right", "left", "full"] = "std"
    galore_layerwise: bool = False
    use_apollo: bool = False
    apollo_target: list[str] = field(default_factory=lambda: ["all"])
    apollo_rank: int = 16
    apollo_update_interval: int = 200
    apollo_scale: float = 32.0
    apollo_proj: Literal["svd", "random"] = "random"
    apollo_proj_type: Literal["std", "right", "left"] = "std"
    apollo_scale_type: Literal["channel", "tensor"] = "channel"
    apollo_layerwise: bool = False
    apollo_scale_front: bool = False
    use_badam: bool = False
    badam_mode: Literal["layer", "ratio"] = "layer"
    badam_start_block: int | None = None
    badam_switch_mode: Literal["ascending", "descending", "random", "fixed"] = "ascending"
    badam_switch_interval: int = 50
    badam_update_ratio: float = 0.05
    badam_mask_mode: Literal["adjacent", "scatter"] = "adjacent"
    badam_verbose: int = 0
    use_adam_mini: bool = False
    # LLaMA Pro (issue 18): train only the blocks `lmforge expand` inserted
    use_llama_pro: bool = field(
        default=False,
        metadata={"help": "With finetuning_type freeze: train the freeze_trainable_layers expanded blocks."},
    )
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
    # output handling that transformers 5 dropped from TrainingArguments
    overwrite_output_dir: bool = False
    logging_dir: str | None = None
