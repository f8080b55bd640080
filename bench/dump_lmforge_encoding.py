"""Dump lmforge's encoding of the preprocessing row (input_ids and labels of every sample) to .npz.

compare.py puts it beside LLaMA-Factory's dump of the same records (bench/llamafactory/driver.py)
and counts the samples that differ; ``bench/encoded_dump.py`` defines the format.

    .venv/bin/python bench/dump_lmforge_encoding.py OUT.npz [--samples 50000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PREPROCESS_SAMPLES, replicated_dataset  # noqa: E402
from encoded_dump import save_encoded  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--samples", type=int, default=PREPROCESS_SAMPLES)
    args = parser.parse_args(argv)

    # a private cache: the dump must come from a fresh encoding, and must not disturb timed runs
    from transformers import AutoTokenizer

    from lmforge.assets import get_asset
    from lmforge.config.parser import build_config
    from lmforge.data import load_sft_datasets
    from lmforge.templates import get_template

    dataset_dir, name = replicated_dataset(args.samples)
    tokenizer = AutoTokenizer.from_pretrained(get_asset("qwen2_5"))  # before the cache moves
    cache = Path(tempfile.mkdtemp(prefix="lmforge-dump-cache-"))
    os.environ["LMFORGE_CACHE"] = str(cache)
    try:
        config = build_config(
            {
                "dataset": name,
                "dataset_dir": str(dataset_dir),
                "template": "qwen",
                "cutoff_len": 1024,
                "overwrite_cache": True,
            }
        )
        bundle = load_sft_datasets(config, tokenizer, get_template("qwen"), "sft")
        train = bundle.train
        save_encoded(args.out, train["input_ids"], train["labels"])
        print(f"{len(train)} samples written to {args.out}")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
