"""Dataset selection, mixing, encoding and packing settings (LLaMA-Factory key names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class DataArguments:
    template: str | None = field(
        default=None,
        metadata={"help": "Chat template name (`lmforge template list`), or `auto` for the tokenizer's own."},
    )
    dataset: list[str] | None = field(
        default=None,
        metadata={"help": "Dataset names from dataset_info.json, or file/folder paths; comma-separated."},
    )
    eval_dataset: list[str] | None = None
    dataset_dir: str = field(default="data", metadata={"help": "Folder holding dataset_info.json."})
    media_dir: str | None = None
    cutoff_len: int = field(default=2048, metadata={"help": "Longest encoded sample, in tokens."})
    train_on_prompt: bool = False
    mask_history: bool = False
    streaming: bool = False
    buffer_size: int = 16384
    mix_strategy: Literal["concat", "interleave_under", "interleave_over"] = "concat"
    interleave_probs: list[float] | None = None
    overwrite_cache: bool = False
    preprocessing_batch_size: int = 1000
    preprocessing_num_workers: int | None = None
    max_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N samples of each dataset."}
    )
    eval_num_beams: int | None = None
    ignore_pad_token_for_loss: bool = True
    val_size: float = field(
        default=0.0, metadata={"help": "Validation split: a fraction (<1) or a sample count."}
    )
    packing: bool | None = None
    neat_packing: bool = False
    tool_format: str | None = None
    tokenized_path: str | None = None
    enable_thinking: bool | None = True
    strict: bool = field(
        default=False,
        metadata={"help": "Stop at the first malformed record instead of dropping and counting it."},
    )
