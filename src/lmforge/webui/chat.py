"""The Chat tab's model: one engine per server, the history kept by each page.

Prompts go through :class:`~lmforge.infer.prompting.PromptBuilder` (``Template.encode``) and
replies stream from the same :class:`~lmforge.infer.engine.Engine` that ``lmforge api`` and
``lmforge chat`` use, so the page talks to a model exactly as the server would.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.config import Config, build_config
from lmforge.conversation import Message
from lmforge.errors import ConfigError
from lmforge.infer.backends import create_engine
from lmforge.infer.engine import Engine
from lmforge.infer.prompting import PromptBuilder
from lmforge.infer.session import ChatSession, chat_options
from lmforge.templates import resolve_template
from lmforge.webui import paths

# (kind, file bytes, file name): what ChatSession keeps for each medium in the conversation
Attachment = tuple[str, bytes, str]
MEDIA_SUFFIXES = {
    "image": {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"},
    "audio": {".wav", ".mp3", ".flac", ".ogg", ".m4a"},
    "video": {".mp4", ".webm", ".mov", ".avi", ".mkv"},
}


def backends() -> list[str]:
    """huggingface always; vllm where it is installed."""
    return ["huggingface"] + (["vllm"] if importlib.util.find_spec("vllm") is not None else [])


def chat_values(
    model: str, adapter: str, template: str, backend: str, trust_remote_code: bool
) -> dict[str, Any]:
    """The config of a chat model, after checking the folders the page names."""
    paths.model_folder(model)
    values: dict[str, Any] = {
        "model_name_or_path": model.strip(),
        "template": template or "auto",
        "infer_backend": backend,
    }
    if adapter and adapter.strip():
        paths.adapter_folder(adapter)
        values["adapter_name_or_path"] = adapter.strip()
    if trust_remote_code:
        values["trust_remote_code"] = True
    return values


@dataclass
class PageChat:
    """One page's conversation: what the model saw (messages with media placeholders, the media) and what is shown."""

    messages: list[Message] = field(default_factory=list)
    media: list[Attachment] = field(default_factory=list)
    shown: list[dict[str, Any]] = field(default_factory=list)


class ChatModel:
    """The loaded engine (or none) and what it needs to build prompts."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.config: Config | None = None
        self.name = ""
        self._lock = asyncio.Lock()

    async def load(self, values: dict[str, Any]) -> str:
        config = build_config(values)
        if config.serving.infer_backend not in backends():
            raise ConfigError("infer_backend vllm: vllm is not installed here (pip install 'lmforge[vllm]')")
        async with self._lock:
            await self.unload()
            engine = await asyncio.to_thread(create_engine, config)
            await engine.start()
            # the template is resolved now, so a wrong name fails on Load rather than on the first message
            resolve_template(config.data.template, engine.tokenizer)
            self.engine, self.config = engine, config
            self.name = values["model_name_or_path"] + (
                f" + {values['adapter_name_or_path']}" if "adapter_name_or_path" in values else ""
            )
            if self.media_kinds:
                self.name += f" (takes {', '.join(sorted(self.media_kinds))})"
        return self.name

    async def unload(self) -> None:
        if self.engine is not None:
            await self.engine.close()
        self.engine, self.config, self.name = None, None, ""

    @property
    def media_kinds(self) -> frozenset[str]:
        """What the loaded model takes besides text ("image", "video", "audio")."""
        media = self.engine.media if self.engine is not None else None
        return media.kinds if media is not None else frozenset()

    def session(self, page: PageChat, system: str, max_new_tokens: int) -> ChatSession:
        """A ChatSession over one page's conversation so far."""
        if self.engine is None or self.config is None:
            raise ConfigError("load a model first")
        template = resolve_template(self.config.data.template, self.engine.tokenizer)
        prompts = PromptBuilder(self.engine.tokenizer, template, default_system=system.strip() or None)
        session = ChatSession(
            self.engine, prompts, chat_options(self.config.generating, prompts, max_new_tokens)
        )
        session.messages, session.media = list(page.messages), list(page.media)
        return session

    async def stream(
        self, page: PageChat, text: str, system: str, max_new_tokens: int, files: list[str]
    ) -> AsyncIterator[tuple[list[dict[str, Any]], PageChat]]:
        """The shown conversation after each new piece of the reply; the page's state once it is complete.

        ``files`` (uploaded through the page) go with this message, as ``/image PATH`` does in
        ``lmforge chat``.
        """
        session = self.session(page, system, max_new_tokens)
        for file in files:
            session.attach(media_kind(file), file)
        names = ", ".join(Path(file).name for file in files)
        shown = [
            *page.shown,
            {"role": "user", "content": text + (f"\n\n📎 {names}" if names else "")},
            {"role": "assistant", "content": ""},
        ]
        async for delta in session.stream(text):
            shown[-1] = {"role": "assistant", "content": shown[-1]["content"] + delta}
            yield list(shown), page
        shown[-1] = {"role": "assistant", "content": session.messages[-1].content}
        yield shown, PageChat(session.messages, session.media, shown)


def media_kind(path: str) -> str:
    """image, audio or video, from a file's suffix; ValueError for anything else."""
    suffix = Path(path).suffix.lower()
    for kind, suffixes in MEDIA_SUFFIXES.items():
        if suffix in suffixes:
            return kind
    raise ValueError(
        f"{Path(path).name}: not a picture, sound or video file this page knows ({suffix or 'no suffix'})"
    )
