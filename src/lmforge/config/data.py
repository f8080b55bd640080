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
    eval_dataset: list[str] | None = field(
        default=None, metadata={"help": "Datasets to evaluate on (instead of val_size), comma-separated."}
    )
    dataset_dir: str = field(default="data", metadata={"help": "Folder holding dataset_info.json."})
    media_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder that relative image, video and audio paths are read from (default: dataset_dir)."
        },
    )
    cutoff_len: int = field(default=2048, metadata={"help": "Longest encoded sample, in tokens."})
    train_on_prompt: bool = field(
        default=False, metadata={"help": "Train on the prompt tokens too, not only the replies."}
    )
    mask_history: bool = field(
        default=False, metadata={"help": "Train only on the last reply of each conversation."}
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Read datasets lazily, without loading them whole (needs max_steps)."},
    )
    mix_strategy: Literal["concat", "interleave_under", "interleave_over"] = field(
        default="concat",
        metadata={
            "help": "How several datasets combine: concat, interleave_under (stop at the shortest) or interleave_over (repeat to the longest)."
        },
    )
    interleave_probs: list[float] | None = field(
        default=None,
        metadata={
            "help": "Sampling probability of each dataset when interleaving, comma-separated, summing to 1."
        },
    )
    overwrite_cache: bool = field(
        default=False, metadata={"help": "Encode the datasets again instead of reading the encoding cache."}
    )
    preprocessing_batch_size: int = field(default=1000, metadata={"help": "Records encoded in one batch."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes that encode the datasets (default: one)."}
    )
    max_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N samples of each dataset."}
    )
    val_size: float = field(
        default=0.0, metadata={"help": "Validation split: a fraction (<1) or a sample count."}
    )
    packing: bool | None = field(
        default=None,
        metadata={
            "help": "Pack several samples into each cutoff_len row; unset means on for stage pt, off otherwise."
        },
    )
    neat_packing: bool = field(
        default=False, metadata={"help": "Pack without attention across samples (implies packing)."}
    )
    tokenized_path: str | None = field(
        default=None,
        metadata={
            "help": "Folder for the encoded datasets: written by the first run (which then stops), read by later ones."
        },
    )
    enable_thinking: bool | None = field(
        default=True,
        metadata={
            "help": "Thinking templates (Qwen3, ...): true renders conversations in thinking mode, false in the template's no-thinking form."
        },
    )
    strict: bool = field(
        default=False,
        metadata={"help": "Stop at the first malformed record instead of dropping and counting it."},
    )
