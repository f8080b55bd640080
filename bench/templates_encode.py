"""Template.encode_batch against the raw fast tokenizer's batch encode, on LLaMA-Factory's demo data.

Prints conversations per second for: the fast tokenizer alone on the already-rendered texts
(the floor nothing can beat), lmforge's encode_batch (render + one batched tokenizer call +
labels), and lmforge's auto template (the tokenizer's jinja). Run:

    .venv/bin/python bench/templates_encode.py [--template qwen --asset qwen2_5 --repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _conversations(limit: int) -> list:
    from lmforge.conversation import Conversation, Message

    data_dir = Path(__file__).resolve().parents[2] / "shared" / "data"
    convs = []
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json"):
        for row in json.loads((data_dir / name).read_text(encoding="utf-8")):
            prompt = row["instruction"] + ("\n" + row["input"] if row.get("input") else "")
            convs.append(
                Conversation(messages=[Message("user", prompt), Message("assistant", row["output"])])
            )
    return convs[:limit]


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--template", default="qwen")
    parser.add_argument("--asset", default="qwen2_5")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from lmforge.assets import get_asset
    from lmforge.templates import get_template, resolve_template

    tok = AutoTokenizer.from_pretrained(get_asset(args.asset))
    template = get_template(args.template)
    convs = _conversations(args.limit)
    texts = [template.render_text(tok, c) for c in convs]
    n = len(convs)
    tokens = sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])

    tok(texts, add_special_tokens=False)  # warm up
    raw = ours = float("inf")
    for _ in range(args.repeat):  # interleaved, so that load from other processes hits both alike
        raw = min(raw, _best(lambda: tok(texts, add_special_tokens=False)["input_ids"], 1))
        ours = min(ours, _best(lambda: template.encode_batch(tok, convs), 1))
    auto = _best(lambda: resolve_template("auto", tok).encode_batch(tok, convs[:200]), 1) * n / min(n, 200)
    print(f"{n} conversations, {tokens} tokens, template {args.template}, tokenizer {args.asset}")
    print(f"raw fast tokenizer (rendered texts): {n / raw:10.0f} conv/s  {tokens / raw:12.0f} tok/s")
    print(
        f"lmforge encode_batch (ids + labels): {n / ours:10.0f} conv/s  {tokens / ours:12.0f} tok/s"
        f"  ({raw / ours:.0%} of raw)"
    )
    print(f"lmforge auto (tokenizer jinja):      {n / auto:10.0f} conv/s  ({raw / auto:.0%} of raw)")


if __name__ == "__main__":
    main()
