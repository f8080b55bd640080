"""A bounded load generator for any OpenAI-compatible server, so every server is timed alike.

It uses the real ``openai`` client, greedy decoding (``temperature=0``) and a prompt that asks for
a long answer, so each request produces its full ``max_tokens`` unless the model stops. Tokens
are counted from each response's ``usage`` (what the server says it generated).

    python bench/openai_load.py --base-url http://127.0.0.1:8000/v1 --model NAME
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."


def _client(base_url: str):
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key="bench", timeout=600, max_retries=0)


def _one(client, model: str, max_tokens: int) -> tuple[float, int]:
    start = time.perf_counter()
    response = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=max_tokens,
        temperature=0,
    )
    elapsed = time.perf_counter() - start
    tokens = response.usage.completion_tokens if response.usage else 0
    return elapsed, tokens


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def measure_server(
    base_url: str,
    *,
    model: str,
    requests_1: int = 10,
    requests_8: int = 16,
    clients: int = 8,
    max_tokens: int = 32,
) -> dict:
    """p50/p95 latency of ``requests_1`` sequential requests; tokens/s of ``requests_8`` over ``clients`` threads."""
    client = _client(base_url)
    _one(client, model, max_tokens)  # warm-up: first-request allocations are not the steady state
    latencies, tokens_1 = [], []
    for _ in range(requests_1):
        elapsed, tokens = _one(client, model, max_tokens)
        latencies.append(elapsed)
        tokens_1.append(tokens)

    lock = threading.Lock()
    done: list[tuple[float, int]] = []
    errors: list[str] = []
    remaining = [requests_8]

    def worker() -> None:
        own = _client(base_url)
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            try:
                result = _one(own, model, max_tokens)
            except Exception as exc:  # noqa: BLE001 - recorded and reported, a failed request is a result
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                done.append(result)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    total_tokens = sum(tokens for _, tokens in done)
    return {
        "max_tokens": max_tokens,
        "p50_latency_s": statistics.median(latencies),
        "p95_latency_s": _percentile(latencies, 0.95),
        "mean_completion_tokens_1": statistics.mean(tokens_1),
        "tokens_per_s_1": sum(tokens_1) / sum(latencies),
        "clients": clients,
        "requests_8": requests_8,
        "completed_8": len(done),
        "errors_8": len(errors),
        "first_error_8": errors[0] if errors else None,
        "tokens_per_s_8": total_tokens / wall,
        "wall_8_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--requests-1", type=int, default=10)
    parser.add_argument("--requests-8", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    result = measure_server(
        args.base_url,
        model=args.model,
        requests_1=args.requests_1,
        requests_8=args.requests_8,
        max_tokens=args.max_tokens,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
