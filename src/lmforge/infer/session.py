"""A chat with one engine: the history, attached media and streamed replies (``lmforge chat``, the web UI)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TextIO

from lmforge.config import GeneratingArguments
from lmforge.conversation import Conversation, Message
from lmforge.infer.engine import Engine, SamplingOptions
from lmforge.infer.prompting import PromptBuilder
from lmforge.media.inputs import MediaInputError, MediaInputs


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
