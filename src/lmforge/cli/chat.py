"""``lmforge chat cfg.yaml``: talk to a model in the terminal, with streamed replies and history.

Type ``clear`` to start over and ``exit`` (or Ctrl-D) to leave. The system prompt is the
config's ``default_system`` (``lmforge chat cfg.yaml default_system='Be brief.'``). Prompts
go through the same template and engine as ``lmforge api``. With a multimodal model,
``/image PATH`` (or ``/video PATH``, ``/audio PATH``) attaches a local file to the next message.
"""

from __future__ import annotations

import asyncio
import sys

from lmforge.config import load_config
from lmforge.infer.backends import create_engine
from lmforge.infer.prompting import PromptBuilder
from lmforge.infer.session import ChatSession, chat_options

HELP = "Chat started. Type `clear` to reset the history, `exit` to quit."
MEDIA_HELP = "Type `/{kinds} PATH` to attach a file to your next message."
MEDIA_COMMANDS = {"/image": "image", "/video": "video", "/audio": "audio"}


def main(argv: list[str]) -> int:
    config = load_config(argv)
    engine = create_engine(config)
    engine.claim_cpu_threads()
    prompts = PromptBuilder.from_config(config, engine.tokenizer)
    session = ChatSession(engine, prompts, chat_options(config.generating, prompts))
    with asyncio.Runner() as runner:
        runner.run(engine.start())
        try:
            _loop(session, runner)
        finally:
            runner.run(engine.close())
    return 0


def _loop(session: ChatSession, runner: asyncio.Runner) -> None:
    print(HELP, flush=True)
    if session.engine.media is not None:
        print(MEDIA_HELP.format(kinds=" PATH` or `/".join(sorted(session.engine.media.kinds))), flush=True)
    while True:
        try:
            text = input("\nUser: ")
        except EOFError:
            print()
            return
        command = text.strip().lower()
        if command == "exit":
            return
        if command == "clear":
            session.clear()
            print("History cleared.", flush=True)
            continue
        if not text.strip():
            continue
        word, _, rest = text.strip().partition(" ")
        if word.lower() in MEDIA_COMMANDS:
            try:
                print(session.attach(MEDIA_COMMANDS[word.lower()], rest.strip()), flush=True)
            except (ValueError, OSError) as exc:
                print(exc, flush=True)
            continue
        print("Assistant: ", end="", flush=True)
        try:
            runner.run(session.reply(text, sys.stdout))
        except ValueError as exc:
            print(f"\n{exc}", flush=True)
        except KeyboardInterrupt:
            session.messages.pop()
            print("\n(interrupted)", flush=True)
