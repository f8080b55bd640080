"""``lmforge eval cfg.yaml``: accuracy on a multiple-choice benchmark (MMLU, C-Eval, CMMLU).

Prints per-subject and per-category accuracy as a table. With ``save_dir`` it also writes
LLaMA-Factory's two files, ``results.json`` (each question's predicted letter, per subject)
and ``results.log`` (the category scores), plus ``scores.json`` (every accuracy, as numbers);
the folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from lmforge.config import Config, load_config
from lmforge.errors import ConfigError
from lmforge.predict.benchmarks import open_benchmark
from lmforge.predict.mcq import PROMPT_STYLES, ChoiceScorer, SubjectResult, category_accuracy, evaluate
from lmforge.predict.table import grid


def main(argv: list[str]) -> int:
    config = load_config(argv)
    run_eval(config, sys.stdout)
    return 0


def run_eval(config: Config, out: TextIO) -> dict[str, Any]:
    settings = config.evaluation
    if not settings.task or "_" not in settings.task:
        raise ConfigError(
            "config key 'task' is required: <benchmark>_<split>, e.g. mmlu_test, ceval_validation, cmmlu_test"
        )
    name, split = settings.task.rsplit("_", 1)
    save_dir = Path(settings.save_dir).expanduser() if settings.save_dir else None
    if save_dir is not None and save_dir.exists():
        raise ConfigError(
            f"save_dir {save_dir} already exists; choose another folder (results are never mixed)"
        )
    benchmark = open_benchmark(settings.task_dir, name)  # a missing task stops before the model loads

    from lmforge.infer.engine import model_context_length
    from lmforge.model.loader import load_model, load_tokenizer
    from lmforge.templates import resolve_template

    tokenizer = load_tokenizer(config.model, padding_side="right")
    template = resolve_template(config.data.template or "fewshot", tokenizer)
    model = load_model(config.model, config.finetuning, trainable=False)
    scorer = ChoiceScorer(
        model,
        tokenizer,
        template,
        PROMPT_STYLES[settings.lang],
        model_context_length(model.config, config.model.model_max_length),
    )
    seed = int(config.training_kwargs.get("seed", 42))
    results = evaluate(scorer, benchmark, split, settings.n_shot, settings.batch_size, seed)
    scores = score_summary(results)
    out.write(score_table(results, scores) + "\n")
    if save_dir is not None:
        save_results(save_dir, results, scores)
        out.write(f"results saved in {save_dir}\n")
    return scores


def score_summary(results: list[SubjectResult]) -> dict[str, Any]:
    return {
        "subjects": {
            r.subject.key: {
                "name": r.subject.name,
                "category": r.subject.category,
                "questions": len(r.correct),
                "accuracy": round(r.accuracy, 4),
            }
            for r in results
        },
        "categories": {
            name: {"questions": count, "accuracy": round(accuracy, 4)}
            for name, (count, accuracy) in category_accuracy(results).items()
        },
    }


def score_table(results: list[SubjectResult], scores: dict[str, Any]) -> str:
    rows = [[r.subject.name, r.subject.category, str(len(r.correct)), f"{r.accuracy:.2f}"] for r in results]
    subjects = grid(["subject", "category", "questions", "accuracy"], rows)
    rows = [[name, str(c["questions"]), f"{c['accuracy']:.2f}"] for name, c in scores["categories"].items()]
    return subjects + "\n\n" + grid(["category", "questions", "accuracy"], rows)


def save_results(save_dir: Path, results: list[SubjectResult], scores: dict[str, Any]) -> None:
    save_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=save_dir.parent, prefix=f".{save_dir.name}."))
    try:
        predictions = {r.subject.key: {str(i): p for i, p in enumerate(r.predictions)} for r in results}
        (staging / "results.json").write_text(json.dumps(predictions, indent=2), encoding="utf-8")
        log = "\n".join(f"{name:>15}: {c['accuracy']:.2f}" for name, c in scores["categories"].items())
        (staging / "results.log").write_text(log + "\n", encoding="utf-8")
        (staging / "scores.json").write_text(
            json.dumps(scores, indent=2, ensure_ascii=False), encoding="utf-8"
        )
        os.chmod(staging, 0o755)
        os.rename(staging, save_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
