"""``lmforge chat cfg.yaml``: talk to a model in the terminal, with streamed replies and history.

Type ``clear`` to start over and ``exit`` (or Ctrl-D) to leave. The system prompt is the
config's ``default_system`` (``lmforge chat cfg.yaml default_system='Be brief.'``). Prompts
go through the same template and engine as ``lmforge api``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from lmforge.config import load_config
from lmforge.conversation import Conversation, Message
from lmforge.infer.engine import Engine, SamplingOptions
from lmforge.infer.prompting import PromptBuilder

HELP = "Chat started. Type `clear` to reset the history, `exit` to quit."


class ChatSession:
    """Conversation history plus one engine; ``reply`` streams an answer and remembers it."""

    def __init__(self, engine: Engine, prompts: PromptBuilder, options: SamplingOptions) -> None:
        self.engine = engine
        self.prompts = prompts
        self.options = options
        self.messages: list[Message] = []

    def clear(self) -> None:
        self.messages = []

    async def reply(self, text: str, out: TextIO) -> str:
        self.messages.append(Message(role="user", content=text))
        prompt_ids = self.prompts.encode(Conversation(messages=list(self.messages)))
        room = self.engine.context_length - len(prompt_ids)
        if room <= 0:
            self.messages.pop()
            raise ValueError(
                f"the conversation is {len(prompt_ids)} tokens, the model's context {self.engine.context_length}; "
                "type `clear` to start over"
            )
        options = SamplingOptions(
            **{**self.options.__dict__, "max_new_tokens": min(self.options.max_new_tokens, room)}
        )
        raw = ""
        async for chunk in self.engine.generate(prompt_ids, options):
            raw += chunk.text
            out.write(chunk.text)
            out.flush()
        out.write("\n")
        parsed = self.prompts.parse(raw)
        self.messages.append(Message(role="assistant", content=parsed.content, reasoning=parsed.reasoning))
        return parsed.content


def main(argv: list[str]) -> int:
    from lmforge.infer.engine import create_engine

    config = load_config(argv)
    engine = create_engine(config)
    engine.claim_cpu_threads()
    prompts = PromptBuilder.from_config(config, engine.tokenizer)
    gen = config.generating
    options = SamplingOptions(
        max_new_tokens=gen.max_new_tokens,
        temperature=gen.temperature if gen.do_sample else 0.0,
        top_p=gen.top_p,
        top_k=gen.top_k,
        repetition_penalty=gen.repetition_penalty,
        stop=prompts.stop_strings(),
        stop_token_ids=prompts.stop_token_ids(),
        skip_special_tokens=gen.skip_special_tokens,
    )
    session = ChatSession(engine, prompts, options)
    with asyncio.Runner() as runner:
        runner.run(engine.start())
        try:
            _loop(session, runner)
        finally:
            runner.run(engine.close())
    return 0


def _loop(session: ChatSession, runner: asyncio.Runner) -> None:
    print(HELP, flush=True)
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
        print("Assistant: ", end="", flush=True)
        try:
            runner.run(session.reply(text, sys.stdout))
        except ValueError as exc:
            print(f"\n{exc}", flush=True)
        except KeyboardInterrupt:
            session.messages.pop()
            print("\n(interrupted)", flush=True)
