"""``lmforge chat cfg.yaml``: talk to a model in the terminal, with streamed replies and history.

Type ``clear`` to start over and ``exit`` (or Ctrl-D) to leave. The system prompt is the
config's ``default_system`` (``lmforge chat cfg.yaml default_system='Be brief.'``). Prompts
go through the same template and engine as ``lmforge api``. With a multimodal model,
``/image PATH`` (or ``/video PATH``, ``/audio PATH``) attaches a local file to the next message.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TextIO

from lmforge.config import GeneratingArguments, load_config
from lmforge.conversation import Conversation, Message
from lmforge.infer.engine import Engine, SamplingOptions
from lmforge.infer.prompting import PromptBuilder
from lmforge.media.inputs import MediaInputError, MediaInputs

HELP = "Chat started. Type `clear` to reset the history, `exit` to quit."
MEDIA_HELP = "Type `/{kinds} PATH` to attach a file to your next message."
MEDIA_COMMANDS = {"/image": "image", "/video": "video", "/audio": "audio"}


class ChatSession:
    """Conversation history plus one engine; ``reply`` streams an answer and remembers it."""

    def __init__(self, engine: Engine, prompts: PromptBuilder, options: SamplingOptions) -> None:
        self.engine = engine
        self.prompts = prompts
        self.options = options
        self.messages: list[Message] = []
        self.media: list[tuple[str, bytes, str]] = []  # (kind, file bytes, name), in conversation order
        self.attached: list[tuple[str, bytes, str]] = []  # waiting for the next message

    def clear(self) -> None:
        self.messages, self.media, self.attached = [], [], []

    def attach(self, kind: str, path: str) -> str:
        """Read a local file to go with the next message; raises ValueError saying why not."""
        takes = self.engine.media.kinds if self.engine.media is not None else frozenset()
        if kind not in takes:
            what = ", ".join(sorted(takes)) if takes else "text only"
            raise ValueError(f"this model takes {what}; it cannot take {kind} input")
        file = Path(path).expanduser()
        if not path or not file.is_file():
            raise ValueError(f"no such file: {path}")
        self.attached.append((kind, file.read_bytes(), str(file)))
        return f"Attached {file.name} ({kind}); it goes with your next message."

    async def reply(self, text: str, out: TextIO) -> str:
        async for delta in self.stream(text):
            out.write(delta)
            out.flush()
        out.write("\n")
        return self.messages[-1].content or ""

    async def stream(self, text: str) -> AsyncIterator[str]:
        """Yield the answer to ``text`` as it is generated; it joins the history once complete."""
        placeholders = "".join(f"<{kind}>" for kind, _, _ in self.attached)
        self.messages.append(Message(role="user", content=placeholders + text))
        media = self.media + self.attached
        try:
            prompt_ids, inputs = await self._encode(media)
        except (MediaInputError, ValueError):
            self.messages.pop()
            self.attached = []
            raise
        room = self.engine.context_length - len(prompt_ids)
        if room <= 0:
            self.messages.pop()
            self.attached = []
            raise ValueError(
                f"the conversation is {len(prompt_ids)} tokens, the model's context {self.engine.context_length}; "
                "type `clear` to start over"
            )
        options = SamplingOptions(
            **{**self.options.__dict__, "max_new_tokens": min(self.options.max_new_tokens, room)}
        )
        self.media, self.attached = media, []
        raw = ""
        async for chunk in self.engine.generate(prompt_ids, options, inputs):
            raw += chunk.text
            yield chunk.text
        parsed = self.prompts.parse(raw)
        self.messages.append(Message(role="assistant", content=parsed.content, reasoning=parsed.reasoning))

    async def _encode(self, media: list[tuple[str, bytes, str]]) -> tuple[list[int], MediaInputs | None]:
        """Prompt ids for the history, with every medium so far processed and its placeholders expanded."""
        prompt_ids = self.prompts.encode(Conversation(messages=list(self.messages)))
        if not media or self.engine.media is None:
            return prompt_ids, None
        processing = self.engine.media
        kinds, blobs, names = (list(column) for column in zip(*media, strict=True))
        inputs = await asyncio.to_thread(processing.process, blobs, names, kinds)
        return processing.expand(prompt_ids, inputs), inputs


def chat_options(
    gen: GeneratingArguments, prompts: PromptBuilder, max_new_tokens: int | None = None
) -> SamplingOptions:
    """The config's sampling settings with the template's stops (greedy unless ``do_sample``)."""
    options = prompts.sampling_options(gen)
    if max_new_tokens is not None:
        options.max_new_tokens = max_new_tokens
    return options


def main(argv: list[str]) -> int:
    from lmforge.infer.engine import create_engine

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
