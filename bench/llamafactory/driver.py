"""Runs inside LLaMA-Factory 0.9.2's own venv and drives its data stage as a user's script would.

Only LLaMA-Factory's public entry points are used (``get_train_args``, ``load_tokenizer``,
``get_template_and_fix_tokenizer``, ``get_dataset``); training and serving go through
``llamafactory-cli`` itself (see ``bench/llamafactory/runner.py``).

    python driver.py preprocess --config CFG.json --json OUT.json [--dump ENCODED.npz]
    python driver.py count-tokens --config CFG.json --json OUT.json

``preprocess`` times ``get_dataset`` alone (tokenizer loading and imports are reported apart);
``count-tokens`` counts the non-padding and the trained (label) tokens of a training config's
data, which LLaMA-Factory itself does not report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

_started = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llamafactory.data import get_dataset, get_template_and_fix_tokenizer  # noqa: E402
from llamafactory.hparams import get_train_args  # noqa: E402
from llamafactory.model import load_tokenizer  # noqa: E402

from encoded_dump import save_encoded  # noqa: E402

IGNORE_INDEX = -100


def _data_stage(config: dict) -> tuple[dict, float, float]:
    """Run the data stage of a training config: (dataset module, tokenizer seconds, data seconds)."""
    model_args, data_args, training_args, _finetuning_args, _generating_args = get_train_args(dict(config))
    t0 = time.perf_counter()
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    t1 = time.perf_counter()
    # LLaMA-Factory's DPO workflow prepares its pairs as stage "rm" (its loader refuses "dpo")
    stage = "rm" if config["stage"] == "dpo" else config["stage"]
    module = get_dataset(template, model_args, data_args, training_args, stage=stage, **tokenizer_module)
    t2 = time.perf_counter()
    return module, t1 - t0, t2 - t1


def _counts(dataset) -> tuple[int, int, int]:
    """(samples, non-padding tokens, trained tokens): LLaMA-Factory pads only in its collator.

    Pairwise stages count pairs as samples and both answers' tokens."""
    samples = tokens = trained = 0
    if "chosen_input_ids" in dataset.column_names:  # pairwise (dpo, rm): a sample is a pair
        for row in dataset.iter(batch_size=1000):
            for side in ("chosen", "rejected"):
                for ids, labels in zip(row[f"{side}_input_ids"], row[f"{side}_labels"], strict=True):
                    tokens += len(ids)
                    trained += sum(1 for label in labels if label != IGNORE_INDEX)
            samples += len(row["chosen_input_ids"])
        return samples, tokens, trained
    for row in dataset.iter(batch_size=1000):
        for ids, labels in zip(row["input_ids"], row["labels"], strict=True):
            samples += 1
            tokens += len(ids)
            trained += sum(1 for label in labels if label != IGNORE_INDEX)
    return samples, tokens, trained


def preprocess(config: dict, dump: Path | None) -> dict:
    imports_s = time.perf_counter() - _started
    module, tokenizer_s, data_s = _data_stage(config)
    train = module["train_dataset"]
    samples, tokens, trained = _counts(train)
    if dump is not None:
        save_encoded(dump, train["input_ids"], train["labels"])
    return {
        "samples": samples,
        "tokens": tokens,
        "trained_tokens": trained,
        "data_stage_s": data_s,
        "tokenizer_load_s": tokenizer_s,
        "imports_s": imports_s,
        "samples_per_s": samples / data_s,
        "tokens_per_s": tokens / data_s,
    }


def count_tokens(config: dict) -> dict:
    module, _, _ = _data_stage(config)
    samples, tokens, trained = _counts(module["train_dataset"])
    return {"samples": samples, "tokens": tokens, "trained_tokens": trained}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["preprocess", "count-tokens"])
    parser.add_argument("--config", type=Path, required=True, help="LLaMA-Factory arguments as JSON or YAML")
    parser.add_argument("--json", type=Path, required=True, help="write the figures here")
    parser.add_argument("--dump", type=Path, help="preprocess: save input_ids/labels here (.npz)")
    args = parser.parse_args()
    text = args.config.read_text(encoding="utf-8")
    if args.config.suffix == ".json":
        config = json.loads(text)
    else:
        import yaml

        config = yaml.safe_load(text)
    result = preprocess(config, args.dump) if args.command == "preprocess" else count_tokens(config)
    tmp = args.json.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.json)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
