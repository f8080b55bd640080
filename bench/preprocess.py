"""Data-stage throughput: lmforge's cold and cached preprocessing beside the raw fast tokenizer.

alpaca_zh_demo (from ../shared/data) is replicated to 50,000 records, registered in its own
dataset_info.json, and prepared with the Qwen2.5 tokenizer, template qwen and cutoff_len 1024:

- raw: the fast tokenizer alone batch-encoding the same formatted texts (rendered beforehand,
  not timed), in batches of ``preprocessing_batch_size`` as the data stage calls it;
- cold: ``load_sft_datasets`` with an empty cache (read, convert, render, encode, label,
  truncate, write arrow, memory-map), with 1 and with ``--workers`` processes;
- cached: the same call again, served from the cache;
- template.encode_batch: the template's batched encoder alone on ready Conversations (no
  reading, converting, truncating or writing), to show which part of the gap is whose.

Each figure is the best of ``--repeats`` runs, raw and cold interleaved so that load from
other processes hits both alike. ``--write`` puts the table into bench/RESULTS.md under
"Preprocessing" (only that section is touched).

    .venv/bin/python bench/preprocess.py [--samples 50000] [--workers 2] [--repeats 2] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SHARED_DATA = Path(os.environ.get("LMFORGE_BENCH_DATA", REPO.parent / "shared" / "data"))
OUT = BENCH / "out" / "preprocess"
RESULTS = BENCH / "RESULTS.md"
SECTION = "## Preprocessing"
NOTE = (
    "Wall-clock figures swing when other processes share the machine; compare runs within one table, "
    "and prefer the CPU table when the load average is high."
)


def replicate(source: str, n: int) -> tuple[Path, str]:
    """``source`` repeated to ``n`` records in a folder of its own (rewritten only when missing)."""
    info = json.loads((SHARED_DATA / "dataset_info.json").read_text(encoding="utf-8"))
    entry = dict(info[source])
    name = f"{source}_x{n}"
    folder = OUT / name  # one folder per size: runs of different sizes do not share a dataset_info.json
    folder.mkdir(parents=True, exist_ok=True)
    data_file = folder / f"{name}.json"
    if not data_file.exists():
        rows = json.loads((SHARED_DATA / entry["file_name"]).read_text(encoding="utf-8"))
        tmp = data_file.with_suffix(".tmp")
        tmp.write_text(
            json.dumps([rows[i % len(rows)] for i in range(n)], ensure_ascii=False), encoding="utf-8"
        )
        tmp.replace(data_file)
    entry["file_name"] = data_file.name
    info_file = folder / "dataset_info.json"
    if not info_file.exists():
        tmp = info_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({name: entry}, ensure_ascii=False), encoding="utf-8")
        tmp.replace(info_file)
    return folder, name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    args = parser.parse_args()

    import datasets  # noqa: F401  # imported here so that no timed run pays for the import
    from transformers import AutoTokenizer

    from lmforge.assets import get_asset
    from lmforge.config.parser import build_config
    from lmforge.data import load_sft_datasets, make_converter, read_records, resolve_datasets
    from lmforge.data.encoding import sft_view
    from lmforge.data.loader import code_fingerprint
    from lmforge.templates import get_template

    code_fingerprint()  # computed once per process; likewise kept out of the timings
    tokenizer = AutoTokenizer.from_pretrained(get_asset("qwen2_5"))
    template = get_template("qwen")
    dataset_dir, name = replicate("alpaca_zh_demo", args.samples)

    (spec,) = resolve_datasets([name], dataset_dir)
    records = read_records(spec)
    convert = make_converter(spec)
    texts = [template.render_text(tokenizer, sft_view(convert(r))) for r in records.rows(range(len(records)))]

    def raw() -> tuple[float, int]:
        start = time.perf_counter()
        tokens = 0
        for i in range(0, len(texts), args.batch_size):
            batch = tokenizer(texts[i : i + args.batch_size], add_special_tokens=False)["input_ids"]
            tokens += sum(map(len, batch))
        return time.perf_counter() - start, tokens

    conversations = [sft_view(convert(r)) for r in records.rows(range(len(records)))]

    def template_only() -> tuple[float, int]:
        """``Template.encode_batch`` alone on ready Conversations: where the template's share of the time shows."""
        start = time.perf_counter()
        tokens = 0
        for i in range(0, len(conversations), args.batch_size):
            encoded = template.encode_batch(tokenizer, conversations[i : i + args.batch_size])
            tokens += sum(len(e.input_ids) for e in encoded)
        return time.perf_counter() - start, tokens

    cache_root = Path(tempfile.mkdtemp(prefix="lmforge-bench-cache-"))
    os.environ["LMFORGE_CACHE"] = str(cache_root)

    def prepare(workers: int, fresh: bool) -> tuple[float, int, object]:
        if fresh:
            shutil.rmtree(cache_root / "datasets", ignore_errors=True)
        config = build_config(
            {
                "dataset": name,
                "dataset_dir": str(dataset_dir),
                "template": "qwen",
                "cutoff_len": 1024,
                "preprocessing_num_workers": workers,
                "preprocessing_batch_size": args.batch_size,
            }
        )
        start = time.perf_counter()
        bundle = load_sft_datasets(config, tokenizer, template, "sft")
        elapsed = time.perf_counter() - start
        return elapsed, bundle.report.datasets[0].tokens, bundle

    def cached(workers: int) -> tuple[float, int]:
        elapsed, tokens, bundle = prepare(workers, fresh=False)
        assert bundle.report.datasets[0].cached, "the rerun should be served from the cache"  # type: ignore[attr-defined]
        return elapsed, tokens

    best: dict[str, tuple[float, int]] = {}
    best_cpu: dict[str, float] = {}

    def cpu_seconds() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def keep(label: str, run: object) -> None:
        cpu_start = cpu_seconds()
        result = run()  # type: ignore[operator]
        cpu = cpu_seconds() - cpu_start
        if label not in best or result[0] < best[label][0]:
            best[label] = (result[0], result[1])
        best_cpu[label] = min(cpu, best_cpu.get(label, cpu))
        print(f"  {label:<22} {result[0]:7.2f} s wall, {cpu:7.2f} s CPU", file=sys.stderr)

    worker_counts = sorted({1, max(1, args.workers)})
    try:
        for round_ in range(args.repeats):
            print(f"round {round_ + 1}/{args.repeats}", file=sys.stderr)
            keep("raw fast tokenizer", raw)
            keep("template.encode_batch", template_only)
            for workers in worker_counts:
                keep(f"cold, {workers} worker(s)", lambda w=workers: prepare(w, fresh=True)[:2])
            keep("cached rerun", lambda: cached(worker_counts[-1]))
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)

    raw_rate = args.samples / best["raw fast tokenizer"][0]
    rows = []
    for label, (seconds, tokens) in best.items():
        rate = args.samples / seconds
        share = "-" if label == "cached rerun" else f"{100 * rate / raw_rate:.0f}%"
        rows.append(f"| {label} | {seconds:.2f} | {rate:,.0f} | {tokens / seconds:,.0f} | {share} |")
    table = "\n".join(
        [
            f"{args.samples:,} samples (alpaca_zh_demo replicated), Qwen2.5 tokenizer, template qwen, cutoff_len 1024, "
            f"batches of {args.batch_size}; best of {args.repeats} interleaved runs.",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
            f"load average at the end {os.getloadavg()[0]:.1f}.",
            "",
            "| run | seconds | samples/s | tokens/s | of raw |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "CPU seconds (this process, its threads and its workers; less sensitive than wall time to other",
            "processes sharing the machine):",
            "",
            "| run | CPU s | CPU of raw |",
            "|---|---|---|",
            *[
                f"| {label} | {cpu:.2f} | {100 * best_cpu['raw fast tokenizer'] / cpu:.0f}% |"
                for label, cpu in best_cpu.items()
                if label != "cached rerun"
            ],
        ]
    )
    print(table)
    if args.write:
        write_section(table)
    return 0


def write_section(table: str) -> None:
    """Replace (or add) the Preprocessing section of bench/RESULTS.md, leaving other sections alone."""
    command = "`.venv/bin/python bench/preprocess.py --write`"
    body = f"{SECTION}\n\nMeasured by {command} on {time.strftime('%Y-%m-%d')}.\n\n{table}\n\n{NOTE}\n"
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    start = text.find(SECTION)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + (text[end + 1 :] if end != -1 else "")
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(RESULTS)


if __name__ == "__main__":
    raise SystemExit(main())
