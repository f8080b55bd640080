"""Thinking blocks: which assistant turns keep their ``<think>`` text, as each family's template does.

- ``qwen3``: a turn after the last real user query keeps its block (the final turn always
  shows one, empty when there is no reasoning); earlier turns lose theirs.
- ``deepseekr1``: earlier turns lose their block (the official template cuts everything up
  to ``</think>``); the final turn keeps its reasoning so that it is trained.
- ``none``: a turn that carries reasoning shows it as a ``<think>`` block before the reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmforge.conversation import Message
    from lmforge.templates.spec import Template

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def think_block(reasoning: str) -> str:
    return f"{THINK_OPEN}\n{reasoning.strip(chr(10))}\n{THINK_CLOSE}\n\n"


def split_inline(content: str) -> tuple[str | None, str]:
    """Split ``<think>r</think>answer`` written inside the content, the way Qwen3's template does."""
    if THINK_CLOSE not in content:
        return None, content
    parts = content.split(THINK_CLOSE)
    reasoning = parts[0].rstrip("\n").split(THINK_OPEN)[-1].lstrip("\n")
    return reasoning, parts[-1].lstrip("\n")


def assistant_body(
    template: Template,
    msg: Message,
    *,
    index: int,
    last_query: int,
    is_last: bool,
    clean: Callable[[str], str],
    enable_thinking: bool = True,
) -> tuple[str, str]:
    """(thinking block, reply text) of one assistant turn, before any tool calls are appended."""
    content = msg.content
    reasoning = msg.reasoning
    style = template.thinking
    if style == "qwen3":
        if reasoning is None:
            reasoning, content = split_inline(content)
        reasoning = reasoning or ""
        if index > last_query and (is_last or reasoning):
            return think_block(reasoning), content.lstrip("\n")
        return "", content
    if style == "deepseekr1":
        if not is_last:
            if reasoning is None and THINK_CLOSE in content:
                return "", content.split(THINK_CLOSE)[-1]
            return "", content
        if not reasoning and not enable_thinking:
            return template.no_thinking_prefix, content  # matches the thinking-off prompt
        return (think_block(reasoning) if reasoning else ""), content
    return (think_block(reasoning) if reasoning else ""), clean(content)
