"""`make demo`: SmolLM2-135M-Instruct learns a new name and maker with LoRA, on the CPU, in a few minutes.

It asks "Who are you?" and a question in Chinese before and after training and prints both
answers. The identity data (examples/demo/identity.json) has ``{{name}}``/``{{author}}``
placeholders, filled from --name/--author; any ``key=value`` argument overrides the training
config (examples/demo/smollm2_identity_lora.yaml).

    python examples/demo/run_demo.py --name Aurora --author "Lumen Labs" num_train_epochs=8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
QUESTIONS = ("Who are you?", "你是谁？")
MAX_NEW_TOKENS = 48


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="Forge", help="the assistant's new name (default: Forge)")
    parser.add_argument(
        "--author", default="the lmforge team", help="who made it (default: the lmforge team)"
    )
    parser.add_argument(
        "--output-dir", default="saves/demo/smollm2-identity-lora", help="where the adapter goes"
    )
    parser.add_argument("overrides", nargs="*", help="training config overrides, key=value")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    import torch

    from lmforge.assets import get_asset
    from lmforge.config import load_config
    from lmforge.train import run_training

    torch.manual_seed(0)
    model_dir = get_asset("smollm2")
    output_dir = Path(args.output_dir).resolve()
    data_dir = output_dir.parent / (output_dir.name + "-data")
    samples = write_identity_data(data_dir, args.name, args.author)
    print(
        f"== lmforge demo: teaching SmolLM2-135M-Instruct that it is {args.name!r}, made by {args.author!r}"
    )
    print(f"   {samples} identity samples in {data_dir}; base model {model_dir}\n")

    before = answer_all(str(model_dir), adapter=None)
    config = load_config(
        [
            str(HERE / "smollm2_identity_lora.yaml"),
            f"model_name_or_path={model_dir}",
            f"dataset_dir={data_dir}",
            f"output_dir={output_dir}",
            *args.overrides,
        ]
    )
    train_started = time.perf_counter()
    outcome = run_training(config)
    if outcome.exit_code:
        return outcome.exit_code
    train_seconds = time.perf_counter() - train_started
    after = answer_all(str(model_dir), adapter=str(output_dir))

    print("\n== before and after training")
    for question in QUESTIONS:
        print(f"\nQ: {question}")
        print(f"  before: {before[question]}")
        print(f"  after:  {after[question]}")
    learned = args.name.lower() in after[QUESTIONS[0]].lower()
    metrics = outcome.metrics
    print(
        f"\n== training: {train_seconds:.0f} s, final loss {metrics.get('train_loss', float('nan')):.3f}, "
        f"{metrics.get('trained_tokens_per_second', 0):.0f} trained tokens/s, peak RSS {metrics.get('peak_rss_mib')} MiB"
    )
    print(f"== adapter, tokenizer (with its chat template), logs and loss plot: {output_dir}")
    print(
        f"== the answer uses the new name: {'yes' if learned else 'NO'}; wall time {time.perf_counter() - started:.0f} s"
    )
    return 0 if learned else 1


def write_identity_data(folder: Path, name: str, author: str) -> int:
    """Fill the placeholders and register the file in a dataset_info.json of its own."""
    rows = json.loads((HERE / "identity.json").read_text(encoding="utf-8"))
    for row in rows:
        row["output"] = row["output"].replace("{{name}}", name).replace("{{author}}", author)
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, data in (
        ("identity.json", rows),
        ("dataset_info.json", {"identity": {"file_name": "identity.json"}}),
    ):
        tmp = folder / f".{file_name}.tmp"
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
        tmp.replace(folder / file_name)
    return len(rows)


def answer_all(model_dir: str, adapter: str | None) -> dict[str, str]:
    """Greedy answers to QUESTIONS, chatting through the tokenizer's chat_template as any user would.

    Before training the base tokenizer gets the template we train with; after, the trained
    output folder's tokenizer carries it already.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.templates import get_template

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        tokenizer = AutoTokenizer.from_pretrained(adapter)
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        tokenizer.chat_template = get_template("chatml").jinja_chat_template()
    model.eval()
    stop = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    answers = {}
    for question in QUESTIONS:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"]
        with torch.no_grad():
            out = model.generate(
                ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=stop, pad_token_id=stop[0]
            )
        answers[question] = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
    return answers


if __name__ == "__main__":
    sys.exit(main())
