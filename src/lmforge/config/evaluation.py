"""``lmforge eval`` settings: multiple-choice benchmarks (MMLU, C-Eval, CMMLU), LLaMA-Factory's keys.

``seed`` (which few-shot examples each question gets) is transformers' training key of the
same name, so it is read from the training settings rather than declared twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class EvaluationArguments:
    task: str | None = field(
        default=None,
        metadata={"help": "Benchmark and split, `<name>_<split>`: mmlu_test, ceval_validation, cmmlu_test."},
    )
    task_dir: str = field(
        default="evaluation",
        metadata={"help": "Folder holding one folder per benchmark (mapping.json and its CSV files)."},
    )
    batch_size: int = field(default=4, metadata={"help": "Questions scored in one forward pass."})
    lang: Literal["en", "zh"] = field(
        default="en", metadata={"help": "Language of the question prompt: en or zh."}
    )
    n_shot: int = field(default=5, metadata={"help": "Solved dev-split examples put before each question."})
    save_dir: str | None = field(
        default=None, metadata={"help": "Folder for results.json and results.log; must not exist yet."}
    )
    download_mode: str = field(
        default="reuse_dataset_if_exists",
        metadata={
            "help": "LLaMA-Factory's hub download mode; lmforge reads task_dir only, so it is ignored."
        },
    )
