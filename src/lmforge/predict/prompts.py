"""The samples ``do_predict`` answers: each eval record's prompt (every turn before the last reply,
encoded by the chat template with its generation prompt) and that reply as the reference.

Records are read and converted exactly as for training (same registry, formats, ``max_samples``
selection), so the prompt a model is judged on is the prompt it was fine-tuned with.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field

from lmforge.config import Config
from lmforge.data.encoding import sft_view
from lmforge.data.loader import select_indices, training_seed
from lmforge.data.records import BadRecord, make_converter, open_dataset
from lmforge.data.registry import hub_options, media_columns, resolve_datasets
from lmforge.errors import ConfigError, DataError
from lmforge.infer.prompting import PromptBuilder

logger = logging.getLogger(__name__)


@dataclass
class PredictionSample:
    prompt_ids: list[int]
    prompt: str  # the prompt's text, special tokens left out (LLaMA-Factory's ``prompt`` field)
    label: str  # the reference reply


@dataclass
class SampleSet:
    samples: list[PredictionSample] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    first_dropped: dict[str, str] = field(default_factory=dict)
    truncated: int = 0  # prompts longer than cutoff_len, cut in the middle


def prediction_datasets(config: Config) -> list[str]:
    """``eval_dataset``; without one, ``dataset`` when the run does not train (there is nothing else)."""
    data = config.data
    if data.eval_dataset:
        return data.eval_dataset
    if data.dataset and not config.training_kwargs.get("do_train"):
        return data.dataset
    raise ConfigError("do_predict needs config key 'eval_dataset': the datasets whose prompts are answered")


def load_prediction_samples(config: Config, prompts: PromptBuilder) -> SampleSet:
    """Every usable record of the prediction datasets, in dataset order."""
    data = config.data
    out = SampleSet()
    seed = training_seed(config)
    hub = hub_options(config)
    for spec in resolve_datasets(prediction_datasets(config), data.dataset_dir, data.media_dir):
        if media_columns(spec):
            raise ConfigError(
                f"dataset '{spec.name}' has media columns; do_predict takes text datasets only for now"
            )
        records, spec = open_dataset(spec, **hub)
        convert = make_converter(spec)
        indices = select_indices(len(records), spec.num_samples, data.max_samples, seed)
        for index, row in zip(indices, records.rows(indices), strict=True):
            try:
                conv = sft_view(convert(row))
            except BadRecord as bad:
                where = f"dataset '{spec.name}': {records.locate(index)}"
                if data.strict:
                    raise DataError(
                        f"{where}: {bad.reason} ({bad.detail}); fix the record, or set strict: false to skip it"
                    ) from None
                out.dropped[bad.reason] += 1
                out.first_dropped.setdefault(bad.reason, where)
                continue
            reply = conv.messages[-1]
            ids = prompts.encode(dataclasses.replace(conv, messages=conv.messages[:-1]))
            if len(ids) > data.cutoff_len:
                ids = cut_middle(ids, data.cutoff_len)
                out.truncated += 1
            text = str(prompts.tokenizer.decode(ids, skip_special_tokens=True))  # one sequence: one string
            out.samples.append(PredictionSample(ids, text, reply.content))
    for reason, count in out.dropped.items():
        logger.warning(
            "do_predict: skipped %d records: %s (first: %s)", count, reason, out.first_dropped[reason]
        )
    if not out.samples:
        raise DataError("do_predict: no sample to answer; check eval_dataset and max_samples")
    return out


def cut_middle(ids: list[int], length: int) -> list[int]:
    """Keep the start (BOS, system prompt) and the end (the question and the assistant header)."""
    head = length // 2
    return ids[:head] + ids[len(ids) - (length - head) :]
