"""``do_predict`` with ``predict_with_generate``: every prompt answered by a serving engine.

The engine is the one ``lmforge api`` serves with (``infer_backend``: the huggingface engine's
continuous batching, or vLLM), base model plus adapter, so a prediction run costs what serving
costs, not a padded ``generate`` call per batch. Prompts are submitted in windows of the
dataset as wide as the engine's in-flight capacity, each sorted by length (prompts prefilled
together are padded little), while
the lines reach ``generated_predictions.jsonl`` in dataset order: a line is written as soon as
every sample before it is done, and flushed. Run again after an interruption and the finished
lines are kept (a torn last line is cut off) and their samples skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from lmforge.config import Config
from lmforge.errors import ConfigError
from lmforge.infer.backends import create_engine
from lmforge.infer.engine import Engine, SamplingOptions
from lmforge.infer.prompting import PromptBuilder
from lmforge.predict.metrics import corpus_scores, metric_libraries_missing
from lmforge.predict.progress import SampleProgress
from lmforge.predict.prompts import PredictionSample, load_prediction_samples
from lmforge.predict.table import metrics_table
from lmforge.train.outputs import write_json

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "generated_predictions.jsonl"
RESULTS_FILE = "predict_results.json"


@dataclass
class Answer:
    text: str
    tokens: int


def run_generation(config: Config, output_dir: Path, *, out: TextIO | None = None) -> dict[str, Any]:
    """Answer every prediction sample, write the two files in ``output_dir``, return the metrics."""
    missing = metric_libraries_missing()  # said before generating, not after an hour of it
    if missing:
        logger.warning("%s; the predictions are written without them", missing)
    engine = create_engine(config)
    prompts = PromptBuilder.from_config(config, engine.tokenizer)
    sample_set = load_prediction_samples(config, prompts)
    samples = sample_set.samples
    path = output_dir / PREDICTIONS_FILE
    if config.finetuning.overwrite_output_dir and path.exists():
        path.unlink()  # overwrite_output_dir: start over instead of resuming
    done = finished_lines(path, samples)
    if done:
        logger.info(
            "do_predict: %d of %d samples already in %s; answering the rest", done, len(samples), path
        )
    options = prompts.sampling_options(config.generating)
    started = time.perf_counter()
    with asyncio.Runner() as runner:
        runner.run(engine.start())
        try:
            generated = runner.run(_answer_all(engine, samples, done, options, path))
        finally:
            runner.run(engine.close())
    seconds = time.perf_counter() - started
    metrics: dict[str, Any] = {}
    if not missing:
        pairs = [(line["predict"], line["label"]) for line in read_lines(path)]
        metrics.update({f"predict_{name}": value for name, value in corpus_scores(pairs).items()})
    new = len(samples) - done
    metrics.update(
        predict_samples=len(samples),
        predict_samples_resumed=done,
        predict_runtime=round(seconds, 4),
        predict_samples_per_second=round(new / seconds, 3) if seconds and new else None,
        predict_tokens_per_second=round(generated / seconds, 3) if seconds and new else None,
        predict_generated_tokens=generated,
        predict_truncated_prompts=sample_set.truncated,
        predict_skipped_records=sum(sample_set.dropped.values()),
        predict_engine=config.serving.infer_backend,
    )
    write_json(output_dir / RESULTS_FILE, metrics)
    if out is not None:
        out.write(metrics_table(metrics, title=f"do_predict: {len(samples)} samples, {path}") + "\n")
    return metrics


def finished_lines(path: Path, samples: list[PredictionSample]) -> int:
    """How many samples ``path`` already answers; a torn last line (a killed run) is cut off.

    Lines are checked against the samples, so a file written for other data is never extended.
    """
    if not path.exists():
        return 0
    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    if len(complete) != len(raw):
        path.write_bytes(complete)
    lines = read_lines(path)
    if len(lines) > len(samples):
        raise ConfigError(
            f"{path} has more lines ({len(lines)}) than there are samples ({len(samples)}); "
            "remove it or set overwrite_output_dir: true"
        )
    for number, (line, sample) in enumerate(zip(lines, samples, strict=False), 1):
        if line.get("prompt") != sample.prompt or line.get("label") != sample.label:
            raise ConfigError(
                f"{path}, line {number}: written for another sample than eval_dataset's; "
                "remove the file or set overwrite_output_dir: true to start over"
            )
    return len(lines)


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            raise ConfigError(f"{path}, line {number}: not JSON; remove the file to start over") from None
    return lines


def submission_order(samples: list[PredictionSample], start: int, window: int) -> list[int]:
    """Indices from ``start`` on, window by window of the dataset, each window longest prompt first."""
    order: list[int] = []
    for low in range(start, len(samples), window):
        chunk = range(low, min(low + window, len(samples)))
        order.extend(sorted(chunk, key=lambda i: -len(samples[i].prompt_ids)))
    return order


async def _answer_all(
    engine: Engine, samples: list[PredictionSample], done: int, options: SamplingOptions, path: Path
) -> int:
    """Generate for samples ``done:``, writing lines in dataset order; returns the tokens generated."""
    capacity = _capacity(engine)
    slots = asyncio.Semaphore(capacity)
    answers: dict[int, Answer] = {}
    next_line = done
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle, SampleProgress(len(samples), done) as progress:

        def write_ready() -> None:
            nonlocal next_line
            while next_line in answers:
                answer = answers.pop(next_line)
                sample = samples[next_line]
                line = {"prompt": sample.prompt, "predict": answer.text, "label": sample.label}
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                handle.flush()
                next_line += 1

        async def answer(index: int) -> None:
            try:
                result = await _generate_one(engine, samples[index], options)
                answers[index] = result
                progress.advance(result.tokens)  # counted when done, written when its turn comes
                write_ready()
            finally:
                slots.release()

        tasks: list[asyncio.Task[None]] = []
        try:
            for index in submission_order(samples, done, window=capacity):
                await slots.acquire()
                failed = next((t for t in tasks if t.done() and t.exception()), None)
                if failed is not None:
                    raise failed.exception()  # type: ignore[misc]
                tasks.append(asyncio.create_task(answer(index)))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        return progress.tokens


async def _generate_one(engine: Engine, sample: PredictionSample, options: SamplingOptions) -> Answer:
    room = engine.context_length - len(sample.prompt_ids)
    if room <= 0:
        return Answer("", 0)  # the prompt fills the whole context: nothing can follow it
    asked = replace(options, max_new_tokens=min(options.max_new_tokens, room))
    text, tokens = [], 0
    async for chunk in engine.generate(sample.prompt_ids, asked):
        text.append(chunk.text)
        tokens = chunk.num_tokens
    return Answer("".join(text), tokens)


def _capacity(engine: Engine) -> int:
    """Requests to keep in flight: a batch's worth more than the engine decodes at once, so a free
    row is filled at once; never more than the engine admits (it would refuse the rest)."""
    batch = getattr(engine, "max_batch", None)
    if isinstance(batch, int):
        return max(1, batch + min(batch, getattr(engine, "max_queued", batch)))
    capacity = getattr(engine, "capacity", None)
    return max(1, capacity) if isinstance(capacity, int) else 16
