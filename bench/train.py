"""Training throughput and memory: trained tokens/s and peak RSS of `lmforge train`, one case per process.

Cases:
  smollm2     SmolLM2-135M-Instruct LoRA on alpaca_en_demo (shared data), max_samples 100, batch 4,
              cutoff 512, fp32; ``--packing`` packs samples into 512-token rows.
  qwen-vocab  one training step of tiny_model("qwen2") (Qwen's 151k vocabulary) at batch 8 x 1024;
              ``--no-chunked-loss`` runs the plain loss for comparison.

    python bench/train.py [--case smollm2|qwen-vocab] [--packing] [--no-chunked-loss]
                          [--max-steps N] [--json]
    python bench/train.py --write-results     # all four rows, each in a fresh process -> bench/RESULTS.md

Throughput counts trained tokens (labels the loss is computed on), not padding. Peak RSS is the
process's own high-water mark (``ru_maxrss``), model loading and data preparation included.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SHARED_DATA = Path(os.environ.get("LMFORGE_BENCH_DATA", REPO.parent / "shared" / "data"))
RESULTS = BENCH / "RESULTS.md"
BEGIN, END = "<!-- bench/train.py: begin -->", "<!-- bench/train.py: end -->"


def run_case(
    case: str,
    packing: bool,
    chunked_loss: bool,
    max_steps: int | None,
    template: str,
    checkpointing: bool = True,
    bf16: bool = False,
) -> dict[str, Any]:
    from lmforge.config import build_config
    from lmforge.train import PreparedData, run_training

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-train-") as tmp:
        values: dict[str, Any] = {
            "stage": "sft",
            "finetuning_type": "lora",
            "lora_rank": 8,
            "lora_target": "all",
            "output_dir": str(Path(tmp) / "out"),
            "learning_rate": 1e-4,
            "logging_steps": 5,
            "save_strategy": "no",
            "report_to": "none",
            "disable_tqdm": True,
            "seed": 42,
            "chunked_loss": chunked_loss,
            "packing": packing,
            "disable_gradient_checkpointing": not checkpointing,
        }
        data = None
        if case == "smollm2":
            from lmforge.assets import get_asset

            values.update(
                model_name_or_path=str(get_asset("smollm2")),
                template=template,
                dataset="alpaca_en_demo",
                dataset_dir=str(SHARED_DATA),
                max_samples=100,
                cutoff_len=512,
                per_device_train_batch_size=4,
                num_train_epochs=1,
                overwrite_cache=True,
            )
        else:
            from datasets import Dataset

            from lmforge.assets import tiny_model

            model_dir = tiny_model("qwen2")
            values.update(
                model_name_or_path=str(model_dir),
                template="qwen",
                cutoff_len=1024,
                per_device_train_batch_size=8,
                max_steps=1,
            )
            data = PreparedData(train=Dataset.from_list(_random_samples(8, 1024, vocab=151_000)))
        if max_steps:
            values["max_steps"] = max_steps
        if bf16:
            values["bf16"] = True  # mixed precision where the CPU computes bf16 natively, else fp32
        started = time.perf_counter()
        outcome = run_training(build_config(values), data=data)
        wall = time.perf_counter() - started
    if outcome.exit_code:
        raise SystemExit(outcome.exit_code)  # interrupted: no figures
    m = outcome.metrics
    return {
        "case": case,
        "packing": m.get("packing"),
        "chunked_loss": m.get("chunked_loss"),
        "gradient_checkpointing": m.get("gradient_checkpointing", checkpointing),  # auto: the estimate's
        "bf16": bf16,
        "estimated_peak_mib": m.get("estimated_peak_mib"),
        "estimated_step_seconds": m.get("estimated_step_seconds"),
        "mfu": m.get("mfu"),
        "steps": m.get("global_step"),
        "trained_tokens": m.get("trained_tokens"),
        "trained_samples": m.get("trained_samples"),
        "train_runtime_s": m.get("train_runtime"),
        "trained_tokens_per_second": m.get("trained_tokens_per_second"),
        "trained_samples_per_second": m.get("trained_samples_per_second"),
        "train_loss": m.get("train_loss"),
        "peak_rss_mib": m.get("peak_rss_mib"),
        "wall_s": round(wall, 1),
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
        "torch_threads": _torch_threads(),
    }


def _random_samples(count: int, length: int, vocab: int) -> list[dict[str, list[int]]]:
    import random

    rng = random.Random(0)
    samples = []
    for _ in range(count):
        ids = [rng.randrange(vocab) for _ in range(length)]
        samples.append({"input_ids": ids, "labels": ids})  # every token trained: the largest loss
    return samples


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


ROWS = (
    ("smollm2", []),
    ("smollm2", ["--packing"]),
    ("qwen-vocab", []),
    ("qwen-vocab", ["--no-chunked-loss"]),
)


def write_results(max_steps: int | None) -> int:
    rows = []
    for case, flags in ROWS:
        command = [sys.executable, str(Path(__file__).resolve()), "--case", case, *flags, "--json"]
        if max_steps and case == "smollm2":
            command += ["--max-steps", str(max_steps)]
        print("running:", " ".join(command[1:]), flush=True)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    _write_section(_render(rows))
    return 0


def _render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "## Training (`bench/train.py`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {_machine()}; "
        f"{rows[0]['torch_threads']} torch threads. The machine was shared with other jobs: the 1-minute "
        "load average before/after each row is listed, so compare rows with that in mind.",
        "",
        "| case | packing | chunked loss | grad. checkpointing | steps | trained tokens | trained tokens/s | "
        "samples/s | runtime s | peak RSS MiB | load before/after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "smollm2": "SmolLM2-135M LoRA, alpaca_en_demo x100, batch 4, cutoff 512, fp32",
        "qwen-vocab": "tiny qwen2 (151k vocab), 1 step, batch 8 x 1024, LoRA, fp32",
    }
    for r in rows:
        lines.append(
            f"| {names[r['case']]} | {r['packing']} | {r['chunked_loss']} | {r.get('gradient_checkpointing')} | "
            f"{r.get('steps')} | {r['trained_tokens']} | "
            f"{r['trained_tokens_per_second']} | {r['trained_samples_per_second']} | {r['train_runtime_s']} | "
            f"{r['peak_rss_mib']} | {r['load_average_1min_before']}/{r['load_average_1min_after']} |"
        )
    lines += [
        "",
        "Reproduce: `python bench/train.py --write-results` (each row in a fresh process), or one row: "
        "`python bench/train.py --case smollm2 --packing --json`.",
    ]
    return "\n".join(lines)


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores"


def _write_section(section: str) -> None:
    """Replace this script's section of RESULTS.md (between its markers), keeping everything else."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(RESULTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=("smollm2", "qwen-vocab"), default="smollm2")
    parser.add_argument("--packing", action="store_true", help="pack samples into cutoff_len rows")
    parser.add_argument("--no-chunked-loss", action="store_true", help="use the plain cross-entropy")
    parser.add_argument(
        "--no-gradient-checkpointing", action="store_true", help="keep activations (faster, more memory)"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    parser.add_argument("--template", default="chatml", help="chat template for smollm2 (default chatml)")
    parser.add_argument("--bf16", action="store_true", help="bf16: true (native bf16 CPUs; fp32 elsewhere)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (last line of stdout)")
    parser.add_argument(
        "--write-results", action="store_true", help="run all rows and update bench/RESULTS.md"
    )
    args = parser.parse_args(argv)
    if args.write_results:
        return write_results(args.max_steps)
    row = run_case(
        args.case,
        args.packing,
        not args.no_chunked_loss,
        args.max_steps,
        args.template,
        checkpointing=not args.no_gradient_checkpointing,
        bf16=args.bf16,
    )
    print(json.dumps(row) if args.json else "\n".join(f"{k}: {v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
