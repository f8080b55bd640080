"""``lmforge template list`` and ``lmforge template render``: see what a template does to a conversation."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.templates.results import IGNORE_INDEX

DESCRIPTION = """\
Chat templates.

  lmforge template list
  lmforge template render --template NAME --tokenizer PATH --input conv.json [--add-generation-prompt] [--json]

conv.json is OpenAI chat format: {"messages": [...], "tools": [...]}, with tool_calls and role
"tool" allowed. Plain output shows the text with trained parts in [[ ]] (green on a terminal);
--json prints {"text": ..., "input_ids": [...], "labels": [...]}. --template auto uses the
tokenizer's own chat_template."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmforge template", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="every template and the model families it serves")
    render = sub.add_parser("render", help="render a conversation and show ids and trained parts")
    render.add_argument("--template", required=True, help="template name, or auto")
    render.add_argument("--tokenizer", required=True, help="folder that AutoTokenizer.from_pretrained loads")
    render.add_argument("--input", required=True, help="conversation in OpenAI chat format (JSON file)")
    render.add_argument("--add-generation-prompt", action="store_true", help="end with the assistant header")
    render.add_argument("--json", action="store_true", help="print text, input_ids and labels as JSON")
    render.add_argument("--no-thinking", action="store_true", help="enable_thinking=False (qwen3)")
    render.add_argument("--mask-history", action="store_true", help="train only the last assistant turn")
    render.add_argument("--train-on-prompt", action="store_true", help="train every token")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.action == "list":
        return _list()
    return _render(args)


def _list() -> int:
    from lmforge.templates import list_templates
    from lmforge.templates.registry import PROVEN_AGAINST

    rows = [
        (
            t.name,
            t.families + (f" [{t.note}]" if t.note else ""),
            "official" if t.name in PROVEN_AGAINST else "documented",
        )
        for t in list_templates()
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'template':<{width}}  {'checked against':<15} model families [notes]")
    for name, families, proof in rows:
        print(f"{name:<{width}}  {proof:<15} {families}")
    print(f"{'auto':<{width}}  {'-':<15} the tokenizer's own chat_template")
    official = sum(proof == "official" for _, _, proof in rows)
    print(
        f"\n{len(rows)} templates: {official} official (proven token for token), {len(rows) - official} documented"
    )
    return 0


def _read_conversation(path: str) -> Any:
    from lmforge.conversation import Conversation

    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LmforgeError(f"--input {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LmforgeError(f"--input {path}: not valid JSON ({exc})") from None
    if isinstance(data, list):
        data = {"messages": data}
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise LmforgeError(
            f'--input {path}: expected {{"messages": [...], "tools": [...]}} (OpenAI chat format)'
        )
    try:
        return Conversation.from_openai(data)
    except ValueError as exc:
        raise LmforgeError(f"--input {path}: {exc}") from None


def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise LmforgeError(f"--tokenizer {path}: not a folder (give a model or tokenizer folder)")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise LmforgeError(
            f"--tokenizer {path}: cannot load a tokenizer ({str(exc).splitlines()[0]})"
        ) from None


def _render(args: argparse.Namespace) -> int:
    from lmforge.data.preview import highlight  # why: `template list` does not load the data package
    from lmforge.templates import resolve_template

    conv = _read_conversation(args.input)
    tokenizer = _load_tokenizer(args.tokenizer)
    template = resolve_template(args.template, tokenizer)
    options = {
        "add_generation_prompt": args.add_generation_prompt,
        "enable_thinking": not args.no_thinking,
    }
    text = template.render_text(tokenizer, conv, **options)
    sample = template.encode(
        tokenizer, conv, train_on_prompt=args.train_on_prompt, mask_history=args.mask_history, **options
    )
    if args.json:
        print(
            json.dumps(
                {"text": text, "input_ids": sample.input_ids, "labels": sample.labels}, ensure_ascii=False
            )
        )
        return 0
    print(highlight(tokenizer, sample.input_ids, sample.labels, sys.stdout.isatty()))
    trained = sum(label != IGNORE_INDEX for label in sample.labels)
    print(f"\n[{template.name}: {len(sample.input_ids)} tokens, {trained} trained]")
    return 0
