"""Split a generated reply into visible text, thinking and tool calls (the serving side)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.templates.reasoning import THINK_CLOSE, THINK_OPEN
from lmforge.templates.results import ParsedResponse
from lmforge.templates.tools import get_tool_format

if TYPE_CHECKING:
    from lmforge.templates.spec import Template


def parse_response(template: Template, text: str) -> ParsedResponse:
    """Thinking is whatever precedes ``</think>`` (the prompt may already hold ``<think>``);
    tool calls are parsed in the template's own format and removed from the content."""
    for stop in template.stop_words:
        if stop and text.endswith(stop):
            text = text[: -len(stop)]
    reasoning = None
    if THINK_CLOSE in text:
        head, _, text = text.partition(THINK_CLOSE)
        reasoning = head.split(THINK_OPEN, 1)[-1].strip("\n")
        text = text.lstrip("\n")
    elif text.lstrip().startswith(THINK_OPEN):  # cut off while still thinking
        return ParsedResponse(content="", reasoning=text.lstrip()[len(THINK_OPEN) :].strip("\n"))
    content, calls = get_tool_format(template.tool_format).parse(text)
    return ParsedResponse(content=content if calls else text, reasoning=reasoning, tool_calls=calls)
