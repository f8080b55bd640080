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
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder for models and datasets fetched from the hub (default: the hub's own cache)."
        },
    )
    use_fast_tokenizer: bool = field(
        default=True, metadata={"help": "Load the fast (Rust) tokenizer where the model has one."}
    )
    split_special_tokens: bool = field(
        default=False,
        metadata={"help": "Tokenize special-token text such as <|im_end|> as plain text, not as one token."},
    )
    new_special_tokens: list[str] | None = field(
        default=None,
        metadata={"help": "Tokens to add to the tokenizer as whole special tokens, comma-separated."},
    )
    model_revision: str = field(
        default="main", metadata={"help": "Hub revision (branch, tag or commit) of the model."}
    )
    low_cpu_mem_usage: bool = field(
        default=True, metadata={"help": "Load the weights without a second copy in memory."}
    )
    flash_attn: Literal["auto", "disabled", "sdpa", "fa2"] = field(
        default="auto", metadata={"help": "Attention implementation: auto, disabled (eager), sdpa or fa2."}
    )
    disable_gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "LLaMA-Factory's switch: true turns gradient checkpointing off (see gradient_checkpointing)."
        },
    )
    use_reentrant_gc: bool = field(
        default=False,
        metadata={
            "help": "Reentrant gradient checkpointing (LLaMA-Factory's default, true). lmforge defaults to "
            "false: PyTorch's recommended implementation, about 10% faster a step on a CPU, same results."
        },
    )
    train_from_scratch: bool = field(
        default=False,
        metadata={"help": "Start from randomly initialised weights of the model's architecture."},
    )
    use_cache: bool = field(
        default=True,
        metadata={
            "help": "LLaMA-Factory's KV-cache switch; lmforge's engines decide the cache themselves (accepted, not read)."
        },
    )
    infer_dtype: Literal["auto", "float16", "bfloat16", "float32"] = field(
        default="auto",
        metadata={
            "help": "Weights' dtype for chat, serving, eval and export: auto (bf16 where the GPU or CPU computes it natively, else fp16 on a GPU, fp32 on a CPU), float16 (a GPU; fp32 on a CPU), bfloat16 or float32."
        },
    )
    hf_hub_token: str | None = field(
        default=None,
        metadata={"help": "Token for private or gated hub models (and for export_hub_model_id uploads)."},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run model code shipped with the checkpoint. Off unless you set it."}
    )
    model_max_length: int | None = field(
        default=None,
        metadata={
            "help": "Longest sequence the model takes, overriding its config (serving's context length)."
        },
    )
    # quantization (QLoRA through bitsandbytes, GPU only)
    quantization_method: Literal["bitsandbytes", "bnb"] = field(
        default="bitsandbytes", metadata={"help": "QLoRA backend: bitsandbytes (bnb)."}
    )
    quantization_bit: int | None = field(default=None, metadata={"help": "4 or 8 to train QLoRA (GPU only)."})
    quantization_type: Literal["fp4", "nf4"] = field(
        default="nf4", metadata={"help": "4-bit number format: nf4 or fp4."}
    )
    double_quantization: bool = field(
        default=True, metadata={"help": "Quantize the 4-bit scales as well (saves about 0.4 bits a weight)."}
    )
    # multimodal processors
    image_max_pixels: int = field(
        default=768 * 768,
        metadata={"help": "Images larger than this many pixels are scaled down before encoding."},
    )
    image_min_pixels: int = field(
        default=32 * 32,
        metadata={"help": "Images smaller than this many pixels are scaled up before encoding."},
    )
    video_max_pixels: int = field(
        default=256 * 256, metadata={"help": "Largest video frame, in pixels; larger frames are scaled down."}
    )
    video_min_pixels: int = field(
        default=16 * 16, metadata={"help": "Smallest video frame, in pixels; smaller frames are scaled up."}
    )
    video_fps: float = field(default=2.0, metadata={"help": "Frames sampled per second of video."})
    video_maxlen: int = field(
        default=128, metadata={"help": "Most frames taken from one video, spread over the whole clip."}
    )
    use_audio_in_video: bool = field(
        default=False,
        metadata={"help": "Qwen2.5-Omni: each video takes the sound clip written after it (<video><audio>)."},
    )
    # export
    export_dir: str | None = field(
        default=None, metadata={"help": "Where `lmforge export` writes the merged model."}
    )
    export_size: int = field(default=5, metadata={"help": "Shard size of the exported model, in GB."})
    export_device: Literal["cpu", "auto"] = field(
        default="cpu",
        metadata={"help": "Device for the export merge; auto changes nothing, merging is cheap on the CPU."},
    )
    export_legacy_format: bool = field(
        default=False, metadata={"help": "Write pytorch_model*.bin shards instead of safetensors."}
    )
    # export: GPTQ quantization and hub upload (issue 18)
    export_quantization_bit: int | None = field(
        default=None,
        metadata={"help": "Quantize the export with GPTQ to this many bits (CUDA GPU, gptqmodel)."},
    )
    export_quantization_dataset: str | None = field(
        default=None, metadata={"help": "JSON/JSONL file of calibration texts for export_quantization_bit."}
    )
    export_quantization_nsamples: int = field(
        default=128, metadata={"help": "Calibration texts used for GPTQ export."}
    )
    export_quantization_maxlen: int = field(
        default=1024, metadata={"help": "Longest calibration text, in tokens, for GPTQ export."}
    )
    export_hub_model_id: str | None = field(
        default=None,
        metadata={"help": "Also upload the exported folder to this Hugging Face hub repository."},
    )
