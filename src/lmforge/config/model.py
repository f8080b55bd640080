"""Model, tokenizer, quantization, processor and export settings (LLaMA-Factory key names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Local folder (or hub id) of the base model."}
    )
    adapter_name_or_path: list[str] | None = field(
        default=None, metadata={"help": "LoRA adapter folder(s), comma-separated; applied in order."}
    )
    cache_dir: str | None = None
    use_fast_tokenizer: bool = True
    resize_vocab: bool = False
    split_special_tokens: bool = False
    new_special_tokens: list[str] | None = None
    model_revision: str = "main"
    low_cpu_mem_usage: bool = True
    flash_attn: Literal["auto", "disabled", "sdpa", "fa2"] = field(
        default="auto", metadata={"help": "Attention implementation: auto, disabled (eager), sdpa or fa2."}
    )
    disable_gradient_checkpointing: bool = False
    use_reentrant_gc: bool = field(
        default=False,
        metadata={
            "help": "Reentrant gradient checkpointing (LLaMA-Factory's default, true). lmforge defaults to "
            "false: PyTorch's recommended implementation, about 10% faster a step on a CPU, same results."
        },
    )
    upcast_layernorm: bool = False
    upcast_lmhead_output: bool = False
    train_from_scratch: bool = False
    use_cache: bool = True
    infer_dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    hf_hub_token: str | None = None
    print_param_status: bool = False
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run model code shipped with the checkpoint. Off unless you set it."}
    )
    model_max_length: int | None = None
    # quantization (QLoRA through bitsandbytes, GPU only)
    quantization_method: Literal["bitsandbytes", "bnb"] = "bitsandbytes"
    quantization_bit: int | None = field(default=None, metadata={"help": "4 or 8 to train QLoRA (GPU only)."})
    quantization_type: Literal["fp4", "nf4"] = "nf4"
    double_quantization: bool = True
    quantization_device_map: Literal["auto"] | None = None
    # multimodal processors
    image_max_pixels: int = 768 * 768
    image_min_pixels: int = 32 * 32
    video_max_pixels: int = 256 * 256
    video_min_pixels: int = 16 * 16
    video_fps: float = 2.0
    video_maxlen: int = 128
    # export
    export_dir: str | None = field(
        default=None, metadata={"help": "Where `lmforge export` writes the merged model."}
    )
    export_size: int = field(default=5, metadata={"help": "Shard size of the exported model, in GB."})
    export_device: Literal["cpu", "auto"] = "cpu"
    export_legacy_format: bool = field(
        default=False, metadata={"help": "Write pytorch_model*.bin shards instead of safetensors."}
    )
    # export: GPTQ quantization and hub upload (issue 18)
    export_quantization_bit: int | None = field(
        default=None,
        metadata={"help": "Quantize the export with GPTQ to this many bits (CUDA GPU, gptqmodel)."},
    )
    export_quantization_dataset: str | None = None
    export_quantization_nsamples: int = 128
    export_quantization_maxlen: int = 1024
    export_hub_model_id: str | None = field(
        default=None,
        metadata={"help": "Also upload the exported folder to this Hugging Face hub repository."},
    )
