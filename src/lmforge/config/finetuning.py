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
    finetuning_type: Literal["lora", "freeze", "full"] = field(
        default="lora",
        metadata={"help": "lora (adapters), freeze (train some layers) or full (every weight)."},
    )
    # lora
    lora_rank: int = field(default=8, metadata={"help": "Rank of the LoRA matrices."})
    lora_alpha: int | None = field(default=None, metadata={"help": "Defaults to 2 * lora_rank."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    lora_target: list[str] = field(
        default_factory=lambda: ["all"], metadata={"help": "`all` linear layers, or module names."}
    )
    additional_target: list[str] | None = field(
        default=None,
        metadata={
            "help": "Modules trained and saved in full next to the adapter (for example embed_tokens), comma-separated."
        },
    )
    use_rslora: bool = field(
        default=False, metadata={"help": "Rank-stabilised LoRA: scale by lora_alpha / sqrt(rank)."}
    )
    use_dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (DoRA)."})
    create_new_adapter: bool = field(
        default=False,
        metadata={"help": "With adapter_name_or_path: merge them all and train a fresh adapter on top."},
    )
    # freeze
    freeze_trainable_layers: int = field(
        default=2,
        metadata={"help": "With finetuning_type freeze: train the last N layers (negative: the first N)."},
    )
    freeze_trainable_modules: list[str] = field(
        default_factory=lambda: ["all"],
        metadata={"help": "With finetuning_type freeze: the modules of those layers to train, or `all`."},
    )
    freeze_extra_modules: list[str] | None = field(
        default=None,
        metadata={"help": "With finetuning_type freeze: modules outside the layers to train as well."},
    )
    # multimodal parts
    freeze_vision_tower: bool = field(
        default=True, metadata={"help": "Keep a multimodal model's vision (or audio) encoder frozen."}
    )
    freeze_multi_modal_projector: bool = field(
        default=True, metadata={"help": "Keep a multimodal model's projector frozen."}
    )
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
    loraplus_lr_embedding: float = field(
        default=1e-6, metadata={"help": "LoRA+: learning rate of embedding adapters."}
    )
    # optimizers through their own packages (issue 18): GaLore, APOLLO, BAdam, Adam-mini
    use_galore: bool = field(
        default=False, metadata={"help": "GaLore optimizer (full or freeze finetuning; galore-torch)."}
    )
    galore_target: list[str] = field(
        default_factory=lambda: ["all"], metadata={"help": "Linear layers GaLore projects, or `all`."}
    )
    galore_rank: int = field(default=16, metadata={"help": "Rank of GaLore's gradient projection."})
    galore_update_interval: int = field(
        default=200, metadata={"help": "Steps between updates of GaLore's projection."}
    )
    galore_scale: float = field(default=2.0, metadata={"help": "Scale of GaLore's projected update."})
    galore_proj_type: Literal["std", "reverse_std", "right", "left", "full"] = field(
        default="std", metadata={"help": "GaLore projection: std, reverse_std, right, left or full."}
    )
    galore_layerwise: bool = field(
        default=False,
        metadata={
            "help": "Update each layer during the backward pass (needs gradient_accumulation_steps: 1)."
        },
    )
    use_apollo: bool = field(
        default=False, metadata={"help": "APOLLO optimizer (full or freeze finetuning; apollo-torch)."}
    )
    apollo_target: list[str] = field(
        default_factory=lambda: ["all"], metadata={"help": "Linear layers APOLLO projects, or `all`."}
    )
    apollo_rank: int = field(default=16, metadata={"help": "Rank of APOLLO's projection."})
    apollo_update_interval: int = field(
        default=200, metadata={"help": "Steps between updates of APOLLO's projection."}
    )
    apollo_scale: float = field(default=32.0, metadata={"help": "Scale of APOLLO's update."})
    apollo_proj: Literal["svd", "random"] = field(
        default="random", metadata={"help": "APOLLO projection: svd or random."}
    )
    apollo_proj_type: Literal["std", "right", "left"] = field(
        default="std", metadata={"help": "APOLLO projection side: std, right or left."}
    )
    apollo_scale_type: Literal["channel", "tensor"] = field(
        default="channel", metadata={"help": "APOLLO scaling: per channel or per tensor."}
    )
    apollo_layerwise: bool = field(
        default=False,
        metadata={
            "help": "Update each layer during the backward pass (needs gradient_accumulation_steps: 1)."
        },
    )
    apollo_scale_front: bool = field(
        default=False,
        metadata={"help": "Not among transformers' APOLLO settings: warned about and not applied."},
    )
    use_badam: bool = field(
        default=False,
        metadata={"help": "BAdam: Adam on one block of layers at a time (full or freeze finetuning; badam)."},
    )
    badam_mode: Literal["layer", "ratio"] = field(
        default="layer",
        metadata={
            "help": "BAdam mode: layer (ratio is refused: transformers cannot take its sparse gradients' norm)."
        },
    )
    badam_start_block: int | None = field(
        default=None, metadata={"help": "Block BAdam starts with (default: its own choice)."}
    )
    badam_switch_mode: Literal["ascending", "descending", "random", "fixed"] = field(
        default="ascending",
        metadata={"help": "Order BAdam switches blocks in: ascending, descending, random or fixed."},
    )
    badam_switch_interval: int = field(default=50, metadata={"help": "Steps between BAdam's block switches."})
    badam_update_ratio: float = field(
        default=0.05, metadata={"help": "badam_mode ratio only (refused): share of parameters updated."}
    )
    badam_mask_mode: Literal["adjacent", "scatter"] = field(
        default="adjacent", metadata={"help": "badam_mode ratio only (refused): adjacent or scatter masks."}
    )
    badam_verbose: int = field(default=0, metadata={"help": "BAdam's own logging level: 0, 1 or 2."})
    use_adam_mini: bool = field(default=False, metadata={"help": "Adam-mini optimizer (adam-mini)."})
    # LLaMA Pro (issue 18): train only the blocks `lmforge expand` inserted
    use_llama_pro: bool = field(
        default=False,
        metadata={"help": "With finetuning_type freeze: train the freeze_trainable_layers expanded blocks."},
    )
    # misc
    pure_bf16: bool = field(
        default=False,
        metadata={"help": "Keep the trainable weights in bf16 too (default: float32 master weights)."},
    )
    disable_shuffling: bool = field(default=False, metadata={"help": "Read the training samples in order."})
    plot_loss: bool = field(
        default=False, metadata={"help": "Save training_loss.png (and the eval loss) in output_dir."}
    )
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
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace what output_dir holds; otherwise a non-empty output_dir resumes or stops."
        },
    )
    logging_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where report_to: tensorboard writes its logs (transformers 5 reads the folder from the "
            "TENSORBOARD_LOGGING_DIR environment variable, which a run sets from this key)."
        },
    )
