"""The ``lmforge`` command: one entry point, a subcommand per job.

Each subcommand lives in the package that does the work and is imported only when chosen,
so ``lmforge version`` starts without loading torch. Errors a user can fix
(:class:`~lmforge.errors.LmforgeError`) print one line and exit with code 2.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from lmforge import __version__
from lmforge.config import load_config
from lmforge.config.keys import GROUP_SUMMARIES, format_key_help
from lmforge.errors import LmforgeError

CONFIG_USAGE = """\
Settings come from a YAML or JSON file (LLaMA-Factory's keys and meanings), and any key can be
overridden on the command line as key=value or --key value, for example:
  lmforge {name} cfg.yaml learning_rate=5e-5 --num_train_epochs 1
Lists are comma-separated (dataset=a,b). An unknown key stops the run with a did-you-mean."""
KEYS_WORD = "keys"  # `lmforge train --help keys [group ...]` lists the keys


@dataclass(frozen=True)
class Command:
    name: str
    target: str  # "package.module:function"; the function takes argv and returns an exit code
    summary: str
    details: str = ""
    takes_config: bool = False  # --help is answered here; the handler parses its own options otherwise


COMMANDS: tuple[Command, ...] = (
    Command("version", "lmforge.cli:_version", "Print the lmforge version."),
    Command(
        "env",
        "lmforge.env:main",
        "Report OS, compilers, CUDA, GPUs and library versions, with what is missing.",
        "Options:\n  --json   print the report as JSON",
    ),
    Command(
        "train",
        "lmforge.cli.train:main",
        "Fine-tune a model (SFT or pre-training; LoRA, DoRA, freeze or full) from a YAML config.",
        "Example:\n  lmforge train examples/smollm2_lora_sft_cpu.yaml\n\n"
        "Multi-GPU or multi-node: torchrun --nproc_per_node N -m lmforge train cfg.yaml (or FORCE_TORCHRUN=1).",
        True,
    ),
    Command(
        "estimate",
        "lmforge.cli.estimate:main",
        "Predict a training run's peak memory and step time before loading any weights.",
        "Example:\n  lmforge estimate examples/train_lora/tiny_cpu_lora_sft.yaml per_device_train_batch_size=8\n\n"
        "Reads the model's config.json and the encoded dataset; exits 1 when the run would not fit,\n"
        "naming the keys that would make it fit.",
        True,
    ),
    Command(
        "api",
        "lmforge.cli.api:main",
        "Serve a model (base + adapter) over an OpenAI-compatible HTTP API.",
        "Example:\n  API_PORT=8000 lmforge api cfg.yaml infer_backend=huggingface\n\n"
        "Environment: API_HOST (default 127.0.0.1; set 0.0.0.0 to accept other machines),\n"
        "API_PORT (8000), API_KEY (require this bearer token), API_MODEL_NAME (name shown in /v1/models).",
        True,
    ),
    Command(
        "chat",
        "lmforge.cli.chat:main",
        "Chat with a model in the terminal (streaming; type `clear` to reset, `exit` to quit).",
        "Example:\n  lmforge chat cfg.yaml default_system='You are a helpful assistant.'",
        True,
    ),
    Command(
        "export",
        "lmforge.export:main",
        "Merge a LoRA adapter into its base model and save a standard Hugging Face folder.",
        "Example:\n  lmforge export cfg.yaml export_dir=models/merged export_size=2",
        True,
    ),
    Command(
        "eval",
        "lmforge.cli.eval:main",
        "Score a model on a multiple-choice benchmark (MMLU, C-Eval, CMMLU layout) by A/B/C/D logits.",
        "Example:\n  lmforge eval cfg.yaml task=mmlu_test task_dir=evaluation lang=en n_shot=5 save_dir=saves/eval\n\n"
        "task_dir/<benchmark>/ holds mapping.json (subject -> name, category) and the subject CSV files\n"
        "(LLaMA-Factory's evaluation/ layout); template: fewshot renders plain few-shot prompts.",
        True,
    ),
    Command(
        "llama-pro",
        "lmforge.model.llama_pro:main",
        "Expand a model with identity blocks for LLaMA Pro: `llama-pro MODEL OUT --num_expand N`.",
    ),
    Command(
        "data",
        "lmforge.cli.data:main",
        "Look at datasets as the model will see them: `data preview cfg.yaml`, `data stats cfg.yaml`.",
    ),
    Command(
        "template",
        "lmforge.cli.template:main",
        "List chat templates or render a conversation: `template list`, `template render ...`.",
    ),
    Command(
        "webui",
        "lmforge.cli.webui:main",
        "Train, watch, chat and export from a browser: `webui [--host 127.0.0.1] [--port 7860] [--auth u:p]`.",
    ),
    Command(
        "assets",
        "lmforge.cli.assets:main",
        "Fetch the offline test assets (real tokenizers, a small chat model): `assets fetch`, `assets list`.",
    ),
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_overview())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        return _version([])
    name, rest = argv[0], argv[1:]
    command = next((c for c in COMMANDS if c.name == name), None)
    if command is None:
        print(f"lmforge: unknown command {name!r}\n\n{_overview()}", file=sys.stderr)
        return 2
    if command.takes_config and any(a in ("-h", "--help") for a in rest):
        return _print_command_help(command, rest)
    try:
        handler = _load(command)
        return int(handler(rest) or 0)
    except LmforgeError as exc:
        print(f"lmforge {name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"lmforge {name}: interrupted", file=sys.stderr)
        return 130


def _load(command: Command) -> Callable[[list[str]], int]:
    module_name, func_name = command.target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            return _not_implemented(command)
        raise
    func = getattr(module, func_name, None)
    return func if func is not None else _not_implemented(command)


def _not_implemented(command: Command) -> Callable[[list[str]], int]:
    def handler(argv: list[str]) -> int:
        if command.takes_config:  # config mistakes are still worth reporting
            load_config(argv)
        print(f"lmforge {command.name}: not implemented yet", file=sys.stderr)
        return 2

    return handler


def _version(_argv: list[str]) -> int:
    print(f"lmforge {__version__}")
    return 0


def _overview() -> str:
    width = max(len(c.name) for c in COMMANDS)
    lines = [
        f"lmforge {__version__}: fine-tune open LLMs and serve them.",
        "",
        "Usage: lmforge <command> [...]",
        "",
    ]
    lines += [f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS]
    lines += ["", "Run `lmforge <command> --help` for a command's options."]
    return "\n".join(lines)


def _print_command_help(command: Command, rest: list[str]) -> int:
    """``--help``: the command's overview; ``--help keys [group ...]``: every key with its help."""
    at = next(i for i, a in enumerate(rest) if a in ("-h", "--help"))
    words = [a for a in rest[at + 1 :] if not a.startswith("-")]
    if words[:1] != [KEYS_WORD]:
        print(_command_help(command))
        return 0
    groups = tuple(words[1:])
    unknown = [g for g in groups if g not in GROUP_SUMMARIES]
    if unknown:
        print(
            f"lmforge {command.name}: unknown key group {unknown[0]!r}; choose from: {', '.join(GROUP_SUMMARIES)}",
            file=sys.stderr,
        )
        return 2
    print(format_key_help(groups))
    return 0


def _command_help(command: Command) -> str:
    usage = f"Usage: lmforge {command.name} cfg.yaml [key=value ...] [--key value ...]"
    parts = [usage, "", command.summary]
    if command.details:
        parts += ["", command.details]
    parts += ["", CONFIG_USAGE.format(name=command.name), "", "Key groups:"]
    width = max(len(g) for g in GROUP_SUMMARIES)
    parts += [f"  {group:<{width}}  {summary}" for group, summary in GROUP_SUMMARIES.items()]
    parts += [
        "",
        f"Run `lmforge {command.name} --help keys` for every key with its type, default and help,",
        f"or `lmforge {command.name} --help keys data` (or any groups above) for some groups only.",
    ]
    return "\n".join(parts)


def _setup_logging() -> None:
    level = os.environ.get("LMFORGE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="[lmforge] %(levelname)s %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


if __name__ == "__main__":
    raise SystemExit(main())
