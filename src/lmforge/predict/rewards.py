"""``do_predict`` with ``stage: rm``: the reward model scores the chosen and the rejected answer of every eval pair.

The file names and fields are LLaMA-Factory 0.9.2's, so scripts written for its reward-model
predictions read ours: ``generated_predictions.jsonl`` holds one ``{"chosen": score,
"rejected": score}`` line per pair, in dataset order, and ``predict_results.json`` the metrics
(``predict_accuracy``: the share of pairs whose chosen answer scores higher; ``predict_loss``: the
mean pairwise loss; ``predict_margin``: the mean of chosen minus rejected; throughput, in pairs).
Scores are written at full precision (LLaMA-Factory rounds them to two decimals), and the file is
written under a temporary name, then renamed.

The pairs are encoded as for training (same template, masking and ``cutoff_len``; pairs that
cannot fit are dropped and counted), and each score is the model's own: the score head at the
answer's last token that is not padding (train/rm.py's ``answer_scores``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import torch
from datasets import Dataset

from lmforge.config import Config
from lmforge.data import load_sft_datasets
from lmforge.data.registry import media_columns, resolve_datasets
from lmforge.errors import ConfigError, DataError
from lmforge.model.loader import load_model, load_tokenizer
from lmforge.predict.progress import SampleProgress
from lmforge.predict.prompts import prediction_datasets
from lmforge.predict.table import metrics_table
from lmforge.templates import resolve_template
from lmforge.train.dpo import PairwiseCollator
from lmforge.train.outputs import write_json, write_text
from lmforge.train.preference_losses import pairwise_reward_loss
from lmforge.train.rm import answer_scores

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "generated_predictions.jsonl"
RESULTS_FILE = "predict_results.json"


def run_reward_scores(config: Config, output_dir: Path, *, out: TextIO | None = None) -> dict[str, Any]:
    """Score every eval pair, write the lines and the metrics; returns the metrics."""
    tokenizer = load_tokenizer(config.model)
    pairs = _eval_pairs(config, tokenizer)
    model = load_model(config.model, config.finetuning, trainable=False, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id  # the score pools at the last non-padding token
    if torch.cuda.is_available() and config.model.quantization_bit is None:
        model.to("cuda")  # type: ignore[arg-type]  # transformers' decorator hides the signature of .to
    collate = PairwiseCollator(pad_token_id=tokenizer.pad_token_id)
    size = max(1, int(config.training_kwargs.get("per_device_eval_batch_size") or 8))
    device = next(model.parameters()).device
    chosen: list[float] = []
    rejected: list[float] = []
    started = time.perf_counter()
    with SampleProgress(len(pairs), desc="predict (rewards)") as progress, torch.inference_mode():
        for low in range(0, len(pairs), size):
            batch = collate([pairs[i] for i in range(low, min(low + size, len(pairs)))])
            scores = answer_scores(model, {k: v.to(device) for k, v in batch.items()})
            pair_chosen, pair_rejected = scores.cpu().chunk(2)
            chosen += pair_chosen.tolist()
            rejected += pair_rejected.tolist()
            progress.advance(samples=len(pair_chosen))
    seconds = time.perf_counter() - started
    write_text(output_dir / PREDICTIONS_FILE, prediction_lines(chosen, rejected))
    metrics = pair_metrics(chosen, rejected, seconds)
    write_json(output_dir / RESULTS_FILE, metrics)
    logger.info(
        "do_predict: %d pairs scored; the scores are in %s", len(chosen), output_dir / PREDICTIONS_FILE
    )
    if out is not None:
        out.write(metrics_table(metrics, title=f"do_predict (rewards): {len(chosen)} pairs") + "\n")
    return metrics


def _eval_pairs(config: Config, tokenizer: PreTrainedTokenizerBase) -> Dataset:
    """The prediction datasets as encoded pairs, in dataset order (text only, as stage rm trains)."""
    data = config.data
    names = prediction_datasets(config)
    for spec in resolve_datasets(names, data.dataset_dir, data.media_dir):
        if media_columns(spec):
            raise ConfigError(f"dataset '{spec.name}' has media columns; stage rm scores text pairs only")
    data = dataclasses.replace(data, dataset=None, eval_dataset=names, val_size=0.0, streaming=False)
    template = resolve_template(data.template, tokenizer)
    pairs = load_sft_datasets(dataclasses.replace(config, data=data), tokenizer, template, "rm").eval
    if not isinstance(pairs, Dataset) or len(pairs) == 0:
        raise DataError("do_predict: no pair to score; check eval_dataset and max_samples")
    return pairs


def prediction_lines(chosen: list[float], rejected: list[float]) -> str:
    """One JSON line per pair, LLaMA-Factory's fields.

    >>> prediction_lines([1.5], [-0.25])
    '{"chosen": 1.5, "rejected": -0.25}\\n'
    """
    return "".join(
        json.dumps({"chosen": c, "rejected": r}, ensure_ascii=False) + "\n"
        for c, r in zip(chosen, rejected, strict=True)
    )


def pair_metrics(chosen: list[float], rejected: list[float], seconds: float) -> dict[str, Any]:
    """Accuracy, mean pairwise loss and margin, and throughput (a sample is a pair, as in LLaMA-Factory)."""
    c, r = torch.tensor(chosen, dtype=torch.float64), torch.tensor(rejected, dtype=torch.float64)
    pairs = len(chosen)
    per_second = round(pairs / seconds, 3) if seconds else None
    return {
        "predict_accuracy": round(float((c > r).double().mean()), 6),
        "predict_loss": round(float(pairwise_reward_loss(c, r).mean()), 6),
        "predict_margin": round(float((c - r).mean()), 6),
        "predict_chosen_score": round(float(c.mean()), 6),
        "predict_rejected_score": round(float(r.mean()), 6),
        "predict_pairs": pairs,
        "predict_runtime": round(seconds, 4),
        "predict_samples_per_second": per_second,
        "predict_pairs_per_second": per_second,
    }
