"""Split a generated reply into visible text, thinking and tool calls (the serving side).

Each tool format has a parser here (:data:`CALL_PARSERS`) that reads back what
:data:`.render.TOOL_TEXTS` writes; a reply whose calls are not well formed is handed back as text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from lmforge.conversation import ToolCall, tool_call_arguments
from lmforge.templates.results import ParsedResponse
from lmforge.templates.slots import THINK_CLOSE, THINK_OPEN

CallParser = Callable[[str], tuple[str, list[ToolCall]]]


def parse_reply(text: str, *, stop_words: tuple[str, ...], tool_format: str | None) -> ParsedResponse:
    """Thinking is whatever precedes ``</think>`` (the prompt may already hold ``<think>``); tool
    calls are parsed in ``tool_format`` (None: the template writes none) and removed from the content."""
    for stop in stop_words:
        if stop and text.endswith(stop):
            text = text[: -len(stop)]
    reasoning = None
    if THINK_CLOSE in text:
        head, _, text = text.partition(THINK_CLOSE)
        reasoning = head.split(THINK_OPEN, 1)[-1].strip("\n")
        text = text.lstrip("\n")
    elif text.lstrip().startswith(THINK_OPEN):  # cut off while still thinking
        return ParsedResponse(content="", reasoning=text.lstrip()[len(THINK_OPEN) :].strip("\n"))
    if tool_format is None:
        return ParsedResponse(content=text, reasoning=reasoning)
    content, calls = CALL_PARSERS[tool_format](text)
    return ParsedResponse(content=content if calls else text, reasoning=reasoning, tool_calls=calls)


def _parse_call_json(obj: object, args_key: str = "arguments") -> ToolCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    try:
        args = tool_call_arguments(obj.get(args_key, obj.get("arguments", obj.get("parameters", {}))))
    except ValueError:
        return None
    return ToolCall(name=obj["name"], arguments=args)


_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def _qwen_parse(text: str) -> tuple[str, list[ToolCall]]:
    calls: list[ToolCall] = []
    for match in _TOOL_CALL_RE.finditer(text):
        try:
            call = _parse_call_json(json.loads(match.group(1)))
        except json.JSONDecodeError:
            call = None
        if call is None:
            return text, []  # not a well-formed call: hand the text back untouched
        calls.append(call)
    if not calls:
        return text, []
    return _TOOL_CALL_RE.sub("", text).strip(), calls


def _json_parse(text: str) -> tuple[str, list[ToolCall]]:
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            call = _parse_call_json(json.loads(stripped), "parameters")
        except json.JSONDecodeError:
            call = None
        if call is not None:
            return "", [call]
    return text, []


def _llama4_parse(text: str) -> tuple[str, list[ToolCall]]:
    if "<|python_start|>" in text and "<|python_end|>" in text:
        head, _, rest = text.partition("<|python_start|>")
        inner, _, tail = rest.partition("<|python_end|>")
        calls = []
        decoder = json.JSONDecoder()
        pos, tail = 0, tail.strip()
        while pos < len(tail):
            try:
                obj, end = decoder.raw_decode(tail, pos)
            except json.JSONDecodeError:
                return text, []
            call = _parse_call_json(obj, "parameters")
            if call is None:
                return text, []
            calls.append(call)
            pos = end
            while pos < len(tail) and tail[pos].isspace():
                pos += 1
        return (head + inner).strip(), calls
    return _json_parse(text)


def _glm4_parse(text: str) -> tuple[str, list[ToolCall]]:
    name, sep, rest = text.strip().partition("\n")
    if sep and re.fullmatch(r"[\w.\-]+", name):
        try:
            args = json.loads(rest)
        except json.JSONDecodeError:
            return text, []
        if isinstance(args, dict):
            return "", [ToolCall(name=name, arguments=args)]
    return text, []


def _mistral_parse(text: str) -> tuple[str, list[ToolCall]]:
    head, sep, rest = text.partition("[TOOL_CALLS]")
    if not sep:
        return text, []
    try:
        payload = json.loads(rest.strip())
    except json.JSONDecodeError:
        return text, []
    calls: list[ToolCall] = []
    for item in payload if isinstance(payload, list) else [payload]:
        call = _parse_call_json(item)
        if call is None:
            return text, []
        call.id = item.get("id")  # a call that parsed came from a dict
        calls.append(call)
    return head.strip(), calls


_DS_CALL_RE = re.compile(
    r"<｜tool▁call▁begin｜>\w*<｜tool▁sep｜>(.*?)\n```json\n(.*?)\n```<｜tool▁call▁end｜>", re.DOTALL
)


def _deepseek_parse(text: str) -> tuple[str, list[ToolCall]]:
    head, sep, _ = text.partition("<｜tool▁calls▁begin｜>")
    if not sep:
        return text, []
    calls = []
    for name, args in _DS_CALL_RE.findall(text):
        try:
            parsed = json.loads(args)
        except json.JSONDecodeError:
            return text, []
        if not isinstance(parsed, dict):
            return text, []
        calls.append(ToolCall(name=name.strip(), arguments=parsed))
    return (head.strip(), calls) if calls else (text, [])


# What each tool format of render.TOOL_TEXTS writes, read back ("default" writes the tagged calls too).
CALL_PARSERS: dict[str, CallParser] = {
    "default": _qwen_parse,
    "qwen": _qwen_parse,
    "llama3": _json_parse,
    "llama4": _llama4_parse,
    "glm4": _glm4_parse,
    "mistral": _mistral_parse,
    "deepseek": _deepseek_parse,
}
