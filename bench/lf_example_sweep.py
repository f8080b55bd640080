"""Run LLaMA-Factory's example configs through lmforge, each on a tiny local model, and tabulate the outcome.

    python bench/lf_example_sweep.py /path/to/LLaMA-Factory/examples --data /work/shared/data --out sweep.md

Nothing of LLaMA-Factory is copied here: the examples are read from the folder given. Each config
keeps its keys except the model (a tiny local model of the same kind), dataset_dir (the demo
data), max_steps 1, preprocessing_num_workers 1 (a shared 2-core machine) and, for chat,
max_new_tokens 8. Configs run in one working folder, training ones first, so an inference or
merge config finds the adapter its training example saved, as in LLaMA-Factory's README.
Outcome: ``runs`` (exit 0), ``refused`` (one error line, no traceback) or ``crash``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from lmforge.assets import tiny_model

COMMANDS = {"train_lora": "train", "train_full": "train", "train_qlora": "train", "extras": "train"}
ORDER = ("train_lora", "train_full", "train_qlora", "extras", "inference", "merge_lora")


def command_for(relative: Path) -> str:
    top = relative.parts[0]
    if top == "inference":
        return "chat"
    if top == "merge_lora":
        return "export"
    if relative.stem.endswith("_eval"):
        return "eval"  # LLaMA-Factory runs it with `llamafactory-cli eval`
    return COMMANDS.get(top, "train")


def swapped_config(path: Path, relative: Path, data_dir: Path) -> dict:
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    visual = "vl" in path.stem or "llava" in path.stem
    config["model_name_or_path"] = str(tiny_model("qwen2_vl" if visual else "llama"))
    if "dataset" in config or "eval_dataset" in config:
        config["dataset_dir"] = str(data_dir)
    if "do_train" in config or "stage" in config:
        config["max_steps"] = 1
    if "preprocessing_num_workers" in config:
        config["preprocessing_num_workers"] = 1
    if command_for(relative) == "chat":
        config["max_new_tokens"] = 8
    return config


def run_one(relative: Path, config: dict, workdir: Path, timeout: int) -> tuple[str, str]:
    command = command_for(relative)
    cfg = workdir / "configs" / relative
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LMFORGE_LOG_LEVEL": "WARNING"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lmforge", command, str(cfg)],
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


def _rank(folder: str) -> int:
    return ORDER.index(folder) if folder in ORDER else len(ORDER)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("examples", type=Path, help="LLaMA-Factory's examples/ folder")
    parser.add_argument("--data", type=Path, required=True, help="folder with dataset_info.json")
    parser.add_argument("--out", type=Path, help="write the markdown table here too")
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--only", nargs="*", help="example folders to run (default: all but accelerate/)")
    args = parser.parse_args()
    root = args.examples.resolve()
    folders = set(args.only or ()) or {p.relative_to(root).parts[0] for p in root.iterdir()} - {"accelerate"}
    files = [p for p in root.rglob("*.yaml") if p.relative_to(root).parts[0] in folders]
    files.sort(key=lambda p: (_rank(p.relative_to(root).parts[0]), str(p)))
    rows = ["| config | lmforge | outcome | what lmforge said |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="lf-sweep-") as tmp:
        # configs name their DeepSpeed files relative to LLaMA-Factory's root (examples/deepspeed/...)
        if (root / "deepspeed").is_dir():
            shutil.copytree(root / "deepspeed", Path(tmp) / "examples" / "deepspeed")
        for path in files:
            relative = path.relative_to(root)
            outcome, message = run_one(
                relative, swapped_config(path, relative, args.data), Path(tmp), args.timeout
            )
            row = f"| {relative} | {command_for(relative)} | {outcome} | {message.replace('|', '/')} |"
            print(row, flush=True)
            rows.append(row)
    if args.out:
        args.out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
