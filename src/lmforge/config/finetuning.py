"""Training stage and adapter settings (LLaMA-Factory key names), plus output handling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class FinetuningArguments:
    stage: Literal["sft", "pt", "dpo", "kto", "rm"] = field(
        default="sft",
        metadata={
            "help": "sft (supervised), pt (pre-training), dpo (pairwise preference: pref_loss), "
            "kto (desirable/undesirable answers) or rm (reward model)."
        },
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
    pissa_init: bool = field(
        default=False, metadata={"help": "Initialise LoRA from the weights' SVD (PiSSA)."}
    )
    pissa_iter: int = field(
        default=16, metadata={"help": "Fast-SVD iterations for PiSSA; -1 for a full SVD."}
    )
    pissa_convert: bool = field(
        default=False,
        metadata={"help": "Save the PiSSA adapter as a plain LoRA adapter of the original base."},
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
    # speed (issue 15): checkpointing only when the estimate says the run needs it
    gradient_checkpointing: bool | Literal["auto"] = field(
        default="auto",
        metadata={
            "help": "auto (default): on only when the memory estimate says the run would not fit without "
            "it; true/false force it. LLaMA-Factory turns it on unless disable_gradient_checkpointing."
        },
    )
    # preference training (stages dpo, kto, rm): LLaMA-Factory's keys and defaults
    pref_beta: float = field(
        default=0.1,
        metadata={"help": "Beta of the preference loss: how far the policy may move from the reference."},
    )
    pref_ftx: float = field(
        default=0.0,
        metadata={"help": "Weight of an SFT term (mean token NLL of the chosen answer) added to the loss."},
    )
    pref_loss: Literal["sigmoid", "hinge", "ipo", "orpo", "simpo"] = field(
        default="sigmoid",
        metadata={
            "help": "dpo loss: sigmoid (DPO), hinge, ipo, orpo or simpo (the last two use no reference)."
        },
    )
    dpo_label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "Assumed share of flipped labels in [0, 0.5) for the sigmoid loss (conservative DPO)."
        },
    )
    simpo_gamma: float = field(default=0.5, metadata={"help": "Target reward margin of the SimPO loss."})
    kto_chosen_weight: float = field(default=1.0, metadata={"help": "KTO weight of desirable answers."})
    kto_rejected_weight: float = field(default=1.0, metadata={"help": "KTO weight of undesirable answers."})
    ref_model: str | None = field(
        default=None,
        metadata={
            "help": "Reference model folder (default: the policy with its adapter off, or a frozen copy)."
        },
    )
    ref_model_adapters: list[str] | None = field(
        default=None, metadata={"help": "PEFT adapters merged into ref_model, in order."}
    )
    ref_model_quantization_bit: int | None = field(
        default=None, metadata={"help": "Load ref_model quantized to 4 or 8 bits (needs a CUDA GPU)."}
    )
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={
            "help": "Compute the reference log-probabilities once before training, so no reference "
            "weights are held or run while training (lmforge's key)."
        },
    )
    # output handling that transformers 5 dropped from TrainingArguments
    overwrite_output_dir: bool = False
    logging_dir: str | None = None
