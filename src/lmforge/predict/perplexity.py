"""``do_predict`` with ``predict_with_generate: false``: loss and perplexity of the references.

The eval set is encoded as for training (same template, masking and ``cutoff_len``), and the
loss is averaged over every trained token of the whole set (not over batches, whose token
counts differ), so perplexity is ``exp`` of a true per-token mean.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, TextIO

import torch
from datasets import Dataset

from lmforge.config import Config
from lmforge.data import load_sft_datasets
from lmforge.data.batching import TrainingCollator
from lmforge.errors import DataError
from lmforge.model.loader import load_model, load_tokenizer
from lmforge.predict.progress import SampleProgress
from lmforge.predict.prompts import prediction_datasets
from lmforge.predict.table import metrics_table
from lmforge.templates import resolve_template
from lmforge.templates.results import IGNORE_INDEX
from lmforge.train.outputs import write_json

RESULTS_FILE = "predict_results.json"


def run_loss(config: Config, output_dir: Path, *, out: TextIO | None = None) -> dict[str, Any]:
    tokenizer = load_tokenizer(config.model)
    template = resolve_template(config.data.template, tokenizer)
    data = dataclasses.replace(
        config.data, dataset=None, eval_dataset=prediction_datasets(config), val_size=0.0, streaming=False
    )
    samples = load_sft_datasets(dataclasses.replace(config, data=data), tokenizer, template).eval
    if not isinstance(samples, Dataset):  # streaming is off and eval_dataset is set: always a Dataset
        raise DataError("do_predict: no eval samples to measure the loss on; check eval_dataset")
    model = load_model(config.model, config.finetuning, trainable=False)
    collate = TrainingCollator(pad_token_id=tokenizer.pad_token_id)
    size = max(1, int(config.training_kwargs.get("per_device_eval_batch_size") or 8))
    total_loss, total_tokens = 0.0, 0
    started = time.perf_counter()
    with SampleProgress(len(samples), desc="predict (loss)") as progress, torch.inference_mode():
        for low in range(0, len(samples), size):
            batch = collate([samples[i] for i in range(low, min(low + size, len(samples)))])
            loss, tokens = summed_loss(model, batch)
            total_loss += loss
            total_tokens += tokens
            progress.advance(samples=len(batch["input_ids"]))
    seconds = time.perf_counter() - started
    mean = total_loss / total_tokens if total_tokens else float("nan")
    metrics = {
        "predict_loss": round(mean, 6),
        "predict_perplexity": round(math.exp(mean), 6) if total_tokens else None,
        "predict_samples": len(samples),
        "predict_tokens": total_tokens,
        "predict_runtime": round(seconds, 4),
        "predict_samples_per_second": round(len(samples) / seconds, 3) if seconds else None,
    }
    write_json(output_dir / RESULTS_FILE, metrics)
    if out is not None:
        out.write(metrics_table(metrics, title=f"do_predict (loss): {len(samples)} samples") + "\n")
    return metrics


def summed_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
    """Cross-entropy summed over the batch's trained tokens, and how many there are."""
    device = next(model.parameters()).device
    logits = model(
        input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
    ).logits
    labels = batch["labels"][:, 1:].to(device)
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return float(loss), int((labels != IGNORE_INDEX).sum())
