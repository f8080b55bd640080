"""A bounded load generator for any OpenAI-compatible server, so every server is timed alike.

It uses the real ``openai`` client, greedy decoding (``temperature=0``) and a prompt that asks for
a long answer, so each request produces its full ``max_tokens`` unless the model stops. Tokens
are counted from each response's ``usage`` (what the server says it generated).

    python bench/openai_load.py --base-url http://127.0.0.1:8000/v1 --model NAME
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

LOGS = Path(__file__).resolve().parent / "out" / "servers"
PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server command (``lmforge api`` or ``llamafactory-cli api``) on a free 127.0.0.1 port.

    Both read ``API_HOST``/``API_PORT``; the context waits until ``/v1/models`` answers and stops
    the whole process group on exit. Its output goes to ``bench/out/servers/NAME.log``.
    """

    def __init__(
        self,
        cmd: list[str],
        *,
        name: str,
        env: dict[str, str] | None = None,
        env_extra: dict[str, str] | None = None,
        startup_timeout_s: float = 600,
    ):
        self.cmd = cmd
        self.name = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.env = dict(env if env is not None else os.environ)
        self.env.update(env_extra or {})
        self.env.update(API_HOST="127.0.0.1", API_PORT=str(self.port), HF_HUB_OFFLINE="1")
        self.startup_timeout_s = startup_timeout_s
        self.log_path = LOGS / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"{self.name} server exited with {self.proc.returncode}:\n{tail}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} server did not answer within {self.startup_timeout_s:.0f} s")

    def __exit__(self, *exc) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


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
