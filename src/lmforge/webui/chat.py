"""The Chat tab's model: one engine per server, the history kept by each page.

Prompts go through :class:`~lmforge.infer.prompting.PromptBuilder` (``Template.encode``) and
replies stream from the same :class:`~lmforge.infer.engine.Engine` that ``lmforge api`` and
``lmforge chat`` use, so the page talks to a model exactly as the server would.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from typing import Any

from lmforge.config import Config, build_config
from lmforge.conversation import Message
from lmforge.errors import ConfigError
from lmforge.infer.chat import ChatSession, chat_options
from lmforge.infer.engine import Engine, create_engine
from lmforge.infer.prompting import PromptBuilder
from lmforge.templates import resolve_template
from lmforge.webui import paths


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
        return self.name

    async def unload(self) -> None:
        if self.engine is not None:
            await self.engine.close()
        self.engine, self.config, self.name = None, None, ""

    def session(self, history: list[dict[str, Any]], system: str, max_new_tokens: int) -> ChatSession:
        """A ChatSession over this page's history (the page keeps it; the server keeps none)."""
        if self.engine is None or self.config is None:
            raise ConfigError("load a model first")
        template = resolve_template(self.config.data.template, self.engine.tokenizer)
        prompts = PromptBuilder(self.engine.tokenizer, template, default_system=system.strip() or None)
        options = chat_options(self.config.generating, prompts, max_new_tokens)
        session = ChatSession(self.engine, prompts, options)
        session.messages = [
            Message(role=turn["role"], content=_text(turn["content"]))
            for turn in history
            if turn.get("role") in ("user", "assistant")
        ]
        return session

    async def stream(
        self, history: list[dict[str, Any]], text: str, system: str, max_new_tokens: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The history with the user's message and the reply so far, after each new piece."""
        session = self.session(history, system, max_new_tokens)
        shown = [*history, {"role": "user", "content": text}, {"role": "assistant", "content": ""}]
        async for delta in session.stream(text):
            shown[-1] = {"role": "assistant", "content": shown[-1]["content"] + delta}
            yield list(shown)
        shown[-1] = {"role": "assistant", "content": session.messages[-1].content}
        yield shown


def _text(content: Any) -> str:
    """A chatbot message's text (Gradio may hand back a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(content)
