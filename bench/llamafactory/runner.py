"""LLaMA-Factory 0.9.2's side of every benchmark row, run from lmforge's venv as subprocesses.

Each function writes the config a LLaMA-Factory user would write, runs LLaMA-Factory from its
own venv (``bench/setup_llamafactory.sh``), and returns a dict of figures. The work matches the
lmforge rows: same dataset files, same tokenizer and weights, same sizes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from common import (  # noqa: E402
    LLAMAFACTORY_CLI,
    LLAMAFACTORY_PYTHON,
    OUT,
    PREPROCESS_SAMPLES,
    SHARED_DATA,
    replicated_dataset,
)
from memory import run_measured  # noqa: E402

DRIVER = Path(__file__).resolve().parent / "driver.py"
WORK = OUT / "llamafactory"
SETUP = BENCH / "setup_llamafactory.sh"

TRAIN_MODEL = "smollm2"  # lmforge asset name of SmolLM2-135M-Instruct
TRAIN_TEMPLATE = "chatml"  # LLaMA-Factory 0.9.2 has no smollm2 template; chatml is SmolLM2's format
MEMORY_MODEL_ARCH = "qwen2"


def ensure_venv() -> None:
    """Create LLaMA-Factory's venv on first use (several GiB of downloads), reuse it after."""
    if LLAMAFACTORY_CLI.exists():
        return
    print(
        "creating LLaMA-Factory's venv with bench/setup_llamafactory.sh (one-off, a few minutes)", flush=True
    )
    subprocess.run(["bash", str(SETUP)], check=True)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # offline like every lmforge run; no version nag; no telemetry; keep tokenizers single-minded
    env.update(HF_HUB_OFFLINE="1", DISABLE_VERSION_CHECK="1", HF_DATASETS_OFFLINE="1", WANDB_DISABLED="true")
    env.update(extra)
    return env


def _write_yaml(path: Path, config: dict) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------- assets


def asset_dir(name: str) -> Path:
    """A model folder from lmforge's asset cache, made readable by LLaMA-Factory's transformers 4.49."""
    from lmforge import assets

    return compatible_copy(Path(assets.get_asset(name)))


def tiny_model_dir(arch: str) -> Path:
    from lmforge import assets

    return compatible_copy(Path(assets.tiny_model(arch)))


def compatible_copy(src: Path) -> Path:
    """Return ``src`` or, when transformers 5 wrote it, a copy whose config/tokenizer 4.49 reads alike.

    transformers 5 moved ``rope_theta`` into ``rope_parameters`` and renamed ``torch_dtype`` to
    ``dtype``; 4.49 would silently fall back to default rope values, giving LLaMA-Factory a
    different model. The copy restores the old keys (weights are hard-linked, not duplicated).
    """
    config_file = src / "config.json"
    if not config_file.exists():
        return src
    config = json.loads(config_file.read_text(encoding="utf-8"))
    patched = dict(config)
    rope = config.get("rope_parameters")
    if isinstance(rope, dict):
        if "rope_theta" in rope and "rope_theta" not in config:
            patched["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default" and "rope_scaling" not in config:
            patched["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    if "quantization_config" in config and config["quantization_config"] is None:
        del patched["quantization_config"]  # 4.49 calls .to_dict() on it when present
    if "dtype" in config and "torch_dtype" not in config:
        patched["torch_dtype"] = config["dtype"]
    tok_config_file = src / "tokenizer_config.json"
    tok_config = json.loads(tok_config_file.read_text(encoding="utf-8")) if tok_config_file.exists() else None
    tok_patched = dict(tok_config) if tok_config is not None else None
    if tok_patched is not None and tok_patched.get("tokenizer_class") in ("TokenizersBackend", None):
        tok_patched["tokenizer_class"] = "PreTrainedTokenizerFast"
    if isinstance(tok_patched, dict) and isinstance(tok_patched.get("extra_special_tokens"), list):
        tok_patched["additional_special_tokens"] = tok_patched.pop("extra_special_tokens")
    if patched == config and tok_patched == tok_config:
        return src
    dest = WORK / "assets" / src.name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for item in src.iterdir():
        if item.is_file():
            try:
                os.link(item, dest / item.name)
            except OSError:
                shutil.copy2(item, dest / item.name)
    (dest / "config.json").unlink()
    (dest / "config.json").write_text(json.dumps(patched, indent=2), encoding="utf-8")
    if tok_patched is not None and tok_patched != tok_config:
        (dest / "tokenizer_config.json").unlink()
        (dest / "tokenizer_config.json").write_text(json.dumps(tok_patched, indent=2), encoding="utf-8")
    return dest


def qwen_tokenizer_dir() -> Path:
    """A folder LLaMA-Factory's ``load_tokenizer`` accepts (it also reads a config.json).

    The tiny Qwen2 model carries the real Qwen2.5 tokenizer; ``LMFORGE_BENCH_QWEN_DIR`` overrides.
    """
    override = os.environ.get("LMFORGE_BENCH_QWEN_DIR")
    if override:
        return Path(override)
    return tiny_model_dir(MEMORY_MODEL_ARCH)


# ---------------------------------------------------------------- (a) preprocessing


def preprocess(
    *, samples: int = PREPROCESS_SAMPLES, workers: int | None = None, dump: Path | None = None
) -> dict:
    """LLaMA-Factory's whole data stage, cold: a fresh datasets cache, ``overwrite_cache``."""
    ensure_venv()
    dataset_dir, dataset = replicated_dataset(samples)
    config = {
        "model_name_or_path": str(qwen_tokenizer_dir()),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "dataset": dataset,
        "dataset_dir": str(dataset_dir),
        "template": "qwen",
        "cutoff_len": 1024,
        "overwrite_cache": True,
        "output_dir": str(WORK / "preprocess_output"),
        "report_to": "none",
    }
    if workers and workers > 1:
        config["preprocessing_num_workers"] = workers
    cfg = WORK / "preprocess.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps(config, indent=2), encoding="utf-8")
    out = WORK / "preprocess_result.json"
    cmd = [str(LLAMAFACTORY_PYTHON), str(DRIVER), "preprocess", "--config", str(cfg), "--json", str(out)]
    if dump is not None:
        cmd += ["--dump", str(dump)]
    cache = Path(tempfile.mkdtemp(prefix="lf_datasets_cache_", dir=OUT))
    try:
        m = run_measured(cmd, env=_env(HF_DATASETS_CACHE=str(cache)), timeout_s=3600).check(
            "LLaMA-Factory preprocess"
        )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    result = json.loads(out.read_text())
    result.update(process_wall_s=m.wall_s, peak_rss_mib=m.peak_rss_mib, workers=workers or 1)
    return result


# ---------------------------------------------------------------- (b) training, (c) memory


def train_config(*, packing: bool, max_steps: int | None, output_dir: Path, bf16: bool = False) -> dict:
    """SmolLM2-135M-Instruct, LoRA rank 8 on all linear layers, alpaca_en_demo[:100], batch 4, cutoff 512."""
    config = {
        "model_name_or_path": str(asset_dir(TRAIN_MODEL)),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": 8,
        "lora_target": "all",
        "dataset": "alpaca_en_demo",
        "dataset_dir": str(SHARED_DATA),
        "template": TRAIN_TEMPLATE,
        "cutoff_len": 512,
        "max_samples": 100,
        "packing": packing,
        "overwrite_cache": True,
        "output_dir": str(output_dir),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1.0e-4,
        "num_train_epochs": 1.0,
        "lr_scheduler_type": "cosine",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 42,
    }
    if max_steps:
        config["max_steps"] = max_steps
    if bf16:
        config["bf16"] = True
    return config


def dpo_config(*, max_steps: int | None, output_dir: Path, max_samples: int | None = None) -> dict:
    """The train row's model and LoRA, as DPO (sigmoid, beta 0.1) on dpo_en_demo[:100], batch 2, cutoff 512.

    ``max_samples`` (--quick) takes fewer pairs: a precomputed reference runs over every pair
    before training, however few steps train.
    """
    config = train_config(packing=False, max_steps=max_steps, output_dir=output_dir)
    del config["packing"]
    if max_samples:
        config["max_samples"] = max_samples
    config.update(
        stage="dpo",
        pref_beta=0.1,
        pref_loss="sigmoid",
        dataset="dpo_en_demo",
        per_device_train_batch_size=2,
        learning_rate=5.0e-6,
    )
    return config


def dpo(*, max_steps: int | None = None, max_samples: int | None = None, timeout_s: float = 3600) -> dict:
    """Pairs/s, trained tokens/s (chosen + rejected answers) and peak RSS of one LLaMA-Factory DPO run."""
    config = dpo_config(max_steps=max_steps, output_dir=WORK / "dpo_output", max_samples=max_samples)
    counts = _count_tokens(config, "dpo")
    results, log, wall, rss = _run_train(config, "dpo", timeout_s)
    steps = [row for row in log if "loss" in row and "current_steps" in row]
    done = steps[-1]["current_steps"] if steps else 0
    runtime = float(results["train_runtime"])
    pairs = min(done * config["per_device_train_batch_size"], counts["samples"])
    fraction = pairs / counts["samples"] if counts["samples"] else 0.0
    return {
        "steps": done,
        "train_runtime_s": runtime,
        "wall_s": wall,
        "pairs_per_s": pairs / runtime,
        "trained_tokens": counts["trained_tokens"] * fraction,
        "trained_tokens_per_s": counts["trained_tokens"] * fraction / runtime,
        "train_loss": results.get("train_loss"),
        "peak_rss_mib": rss,
    }


def memory_config(*, steps: int, batch: int, cutoff: int, output_dir: Path) -> dict:
    """A tiny random Qwen2 (151k vocabulary), LoRA, ``batch`` full rows of ``cutoff`` trained tokens a step.

    Stage pt on c4_demo packs the text into rows of exactly ``cutoff`` tokens, every one trained:
    the same shape as lmforge's case (bench/train.py --case qwen-vocab), 8 x 1024 labels a step.
    """
    return {
        "model_name_or_path": str(tiny_model_dir(MEMORY_MODEL_ARCH)),
        "stage": "pt",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": 8,
        "lora_target": "all",
        "dataset": "c4_demo",
        "dataset_dir": str(SHARED_DATA),
        "template": "qwen",
        "cutoff_len": cutoff,
        "overwrite_cache": True,
        "output_dir": str(output_dir),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": batch,
        "max_steps": steps,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 42,
    }


def _count_tokens(config: dict, name: str) -> dict:
    """Token counts of a training config's data, computed once per config and kept beside it."""
    counted = dict(config, output_dir=str(WORK / "count_output"))
    counted.pop("max_steps", None)
    key = json.dumps(counted, sort_keys=True)
    cache = WORK / f"{name}_tokens.json"
    if cache.exists():
        stored = json.loads(cache.read_text())
        if stored.get("config") == key:
            return stored["counts"]
    cfg = _write_yaml(WORK / f"{name}_count.yaml", counted)
    out = WORK / f"{name}_count_result.json"
    cmd = [str(LLAMAFACTORY_PYTHON), str(DRIVER), "count-tokens", "--config", str(cfg), "--json", str(out)]
    run_measured(cmd, env=_env(HF_DATASETS_CACHE=str(WORK / "hf_datasets_cache")), timeout_s=1800).check(
        "LLaMA-Factory token count"
    )
    counts = json.loads(out.read_text())
    cache.write_text(json.dumps({"config": key, "counts": counts}))
    return counts


def _run_train(config: dict, name: str, timeout_s: float) -> tuple[dict, list[dict], float, float]:
    """``llamafactory-cli train`` on ``config``: (train_results.json, trainer_log.jsonl rows, wall, peak RSS)."""
    ensure_venv()
    output_dir = Path(config["output_dir"])
    if output_dir.exists():
        shutil.rmtree(output_dir)
    cfg = _write_yaml(WORK / f"{name}.yaml", config)
    env = _env(HF_DATASETS_CACHE=str(WORK / "hf_datasets_cache"), CUDA_VISIBLE_DEVICES="")
    m = run_measured([str(LLAMAFACTORY_CLI), "train", str(cfg)], env=env, timeout_s=timeout_s)
    m.check(f"llamafactory-cli train {cfg}")
    results = json.loads((output_dir / "train_results.json").read_text())
    log_file = output_dir / "trainer_log.jsonl"
    log = (
        [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
        if log_file.exists()
        else []
    )
    return results, log, m.wall_s, m.peak_rss_mib


def train(
    *, packing: bool, max_steps: int | None = None, timeout_s: float = 3600, bf16: bool = False
) -> dict:
    """Trained (label) tokens/s, wall time, final loss and peak RSS of one LLaMA-Factory LoRA run."""
    name = ("train_packed" if packing else "train_unpacked") + ("_bf16" if bf16 else "")
    config = train_config(packing=packing, max_steps=max_steps, output_dir=WORK / f"{name}_output", bf16=bf16)
    counts = _count_tokens(config, name)
    results, log, wall, rss = _run_train(config, name, timeout_s)
    steps = [row for row in log if "loss" in row and "current_steps" in row]
    done = steps[-1]["current_steps"] if steps else None
    total = steps[-1]["total_steps"] if steps else None
    runtime = float(results["train_runtime"])
    # with max_steps the run sees only part of the epoch: scale the epoch's token count by the steps done
    fraction = 1.0
    if max_steps and done:
        steps_per_epoch = -(-counts["samples"] // config["per_device_train_batch_size"])
        fraction = min(1.0, done / steps_per_epoch)
    return {
        "packing": packing,
        "steps": done,
        "total_steps": total,
        "max_steps": max_steps,
        "train_runtime_s": runtime,
        "wall_s": wall,
        "trained_tokens": counts["trained_tokens"] * fraction,
        "tokens": counts["tokens"] * fraction,
        "trained_tokens_per_s": counts["trained_tokens"] * fraction / runtime,
        "tokens_per_s": counts["tokens"] * fraction / runtime,
        "s_per_step": runtime / done if done else None,
        "train_loss": results.get("train_loss"),
        "final_loss": steps[-1]["loss"] if steps else None,
        "peak_rss_mib": rss,
        "tokens_exact": fraction == 1.0,
    }


def memory(*, steps: int = 3, batch: int = 8, cutoff: int = 1024, timeout_s: float = 1800) -> dict:
    """Peak RSS of a few LLaMA-Factory training steps on the 151k-vocabulary tiny model."""
    config = memory_config(steps=steps, batch=batch, cutoff=cutoff, output_dir=WORK / "memory_output")
    results, log, wall, rss = _run_train(config, "memory", timeout_s)
    return {
        "steps": steps,
        "batch": batch,
        "cutoff": cutoff,
        "peak_rss_mib": rss,
        "wall_s": wall,
        "train_runtime_s": float(results["train_runtime"]),
    }


# ---------------------------------------------------------------- (d) serving


def serve(
    *,
    model: str,
    model_dir: Path | None = None,
    requests_1: int = 10,
    requests_8: int = 16,
    max_tokens: int = 32,
) -> dict:
    """Latency with one client and throughput with eight, against LLaMA-Factory's hf backend.

    ``model`` is "tiny" (template qwen) or "smollm2" (template chatml); ``model_dir`` overrides the
    folder, so that both tools serve exactly the same weights.
    """
    from openai_load import ServerProcess, measure_server

    ensure_venv()
    template = "qwen" if model == "tiny" else TRAIN_TEMPLATE
    if model_dir is not None:
        model_dir = compatible_copy(Path(model_dir))
    elif model == "tiny":
        model_dir = tiny_model_dir(MEMORY_MODEL_ARCH)
    else:
        model_dir = asset_dir(TRAIN_MODEL)
    cfg = _write_yaml(
        WORK / f"api_{model}.yaml",
        {
            "model_name_or_path": str(model_dir),
            "template": template,
            "infer_backend": "huggingface",
            "infer_dtype": "float32",
        },
    )
    cmd = [str(LLAMAFACTORY_CLI), "api", str(cfg)]
    with ServerProcess(cmd, name=f"llamafactory_{model}", env=_env(CUDA_VISIBLE_DEVICES="")) as server:
        return measure_server(
            server.base_url, model=model, requests_1=requests_1, requests_8=requests_8, max_tokens=max_tokens
        )


def predict(*, samples: int = 200, batch: int = 8, timeout_s: float = 3600) -> dict:
    """``llamafactory-cli train`` with do_predict on the settings of bench/predict.py: samples/s."""
    from predict import predict_config

    ensure_venv()
    output_dir = WORK / "predict_output"
    if output_dir.exists():
        shutil.rmtree(output_dir)
    config = predict_config(str(asset_dir(TRAIN_MODEL)), samples, str(output_dir))
    config.update(per_device_eval_batch_size=batch, overwrite_cache=True, report_to="none")
    config.pop("infer_dtype")  # LLaMA-Factory predicts in the model's dtype (float32 here)
    cfg = _write_yaml(WORK / "predict.yaml", config)
    env = _env(
        HF_DATASETS_CACHE=str(WORK / "hf_datasets_cache"),
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=str(_metric_packages()),
    )
    m = run_measured([str(LLAMAFACTORY_CLI), "train", str(cfg)], env=env, timeout_s=timeout_s)
    m.check(f"llamafactory-cli train {cfg}")
    results = json.loads((output_dir / "predict_results.json").read_text())
    return {
        "samples": samples,
        "samples_per_s": results["predict_samples_per_second"],
        "predict_runtime_s": results["predict_runtime"],
        "wall_s": m.wall_s,
        "bleu_4": results.get("predict_bleu-4"),
    }


def _metric_packages() -> Path:
    """nltk, jieba and rouge-chinese for LLaMA-Factory's predict_with_generate, which requires them
    and which its bench venv lacks: installed once into a folder put on its PYTHONPATH (the
    versions of requirements/constraints.txt, so both tools score with the same libraries)."""
    folder = OUT / "llamafactory_metrics"
    if not (folder / "rouge_chinese").is_dir():
        packages = ["nltk==3.10.4", "rouge-chinese==1.0.3", "jieba==0.42.1", "six==1.17.0"]
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(folder)]
        subprocess.run([*pip, *packages], check=True)
    return folder
