"""Tool-call formats: how each family lists tool definitions, writes a call and a result.

A format is a small object with four jobs: render the definitions (for the system prompt or
the first user turn), render an assistant turn that calls tools, render one tool result,
and parse calls back out of generated text. Templates name their format by string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmforge.conversation import Message, ToolCall
from lmforge.errors import DataError


def tojson(value: Any, indent: int | None = None) -> str:
    """JSON as transformers' chat templates write it (no ASCII escaping, default separators)."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


@dataclass(frozen=True)
class ToolFormat:
    name: str
    definitions: Callable[[list[dict[str, Any]]], str]
    calls: Callable[[str, list[ToolCall]], str]
    result: Callable[[Message], str]
    parse: Callable[[str], tuple[str, list[ToolCall]]]


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    return tool.get("function", tool) if isinstance(tool, dict) else {}


def _parse_call_json(obj: Any, args_key: str = "arguments") -> ToolCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get(args_key, obj.get("arguments", obj.get("parameters", {})))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(name=obj["name"], arguments=args)


# -- tagged JSON: <tool_call>{"name": ..., "arguments": ...}</tool_call> (Qwen, Qwen3, default) --

_QWEN_TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_QWEN_TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call>"
)
_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def _qwen_definitions(tools: list[dict[str, Any]]) -> str:
    return _QWEN_TOOLS_INTRO + "".join("\n" + tojson(t) for t in tools) + _QWEN_TOOLS_OUTRO


def _qwen_calls(content: str, calls: list[ToolCall]) -> str:
    blocks = [
        f'<tool_call>\n{{"name": "{c.name}", "arguments": {tojson(c.arguments)}}}\n</tool_call>'
        for c in calls
    ]
    return "\n".join(([content] if content else []) + blocks)


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


def _default_definitions(tools: list[dict[str, Any]]) -> str:
    listing = "\n".join(tojson(_function(t)) for t in tools)
    return (
        "You can use these tools, described as JSON schemas:\n"
        f"{listing}\n\n"
        'To call a tool, answer with <tool_call>{"name": <tool name>, "arguments": <JSON object>}</tool_call>, '
        "one block per call."
    )


def _default_calls(content: str, calls: list[ToolCall]) -> str:
    blocks = [
        f'<tool_call>{{"name": "{c.name}", "arguments": {tojson(c.arguments)}}}</tool_call>' for c in calls
    ]
    return "\n".join(([content] if content else []) + blocks)


# -- Llama 3.1+ : JSON {"name", "parameters"}; definitions in the first user turn; ipython results --

_LLAMA3_INTRO = (
    "Given the following functions, please respond with a JSON for a function call "
    "with its proper arguments that best answers the given prompt.\n\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.'
    "Do not use variables.\n\n"
)


def _llama3_definitions(tools: list[dict[str, Any]]) -> str:
    return _LLAMA3_INTRO + "".join(tojson(t, indent=4) + "\n\n" for t in tools)


def _llama3_call(c: ToolCall) -> str:
    return f'{{"name": "{c.name}", "parameters": {tojson(c.arguments)}}}'


def _llama3_calls(content: str, calls: list[ToolCall]) -> str:
    if len(calls) != 1:
        raise DataError(
            f"the llama3 tool format has one tool call per assistant turn, got {len(calls)}: "
            "split the calls into separate turns"
        )
    return _llama3_call(calls[0])  # the official template drops any text beside the call


def _llama3_result(msg: Message) -> str:
    # The official template JSON-encodes tool results (a string becomes a quoted string).
    return tojson(msg.content)


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


def _llama4_calls(content: str, calls: list[ToolCall]) -> str:
    return "<|python_start|>" + content + "<|python_end|>" + "".join(_llama3_call(c) for c in calls)


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


# -- GLM-4: definitions as a "# 可用工具" section; call "name\n{json}"; results after <|observation|> --


def _glm4_definitions(tools: list[dict[str, Any]]) -> str:
    parts = ["# 可用工具"]
    for tool in tools:
        fn = _function(tool)
        parts.append(
            f"\n\n## {fn.get('name', '')}\n\n{tojson(fn, indent=4)}\n"
            "在调用上述函数时，请使用 Json 格式表示调用的参数。"
        )
    return "".join(parts)


def _glm4_calls(content: str, calls: list[ToolCall]) -> str:
    blocks = [f"{c.name}\n{tojson(c.arguments)}" for c in calls]
    return "\n".join(([content] if content else []) + blocks)


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


# -- Mistral (v3 tokenizer): [AVAILABLE_TOOLS] / [TOOL_CALLS] / [TOOL_RESULTS] --


def _mistral_definitions(tools: list[dict[str, Any]]) -> str:
    listed = [t if "function" in t else {"type": "function", "function": t} for t in tools]
    return f"[AVAILABLE_TOOLS] {tojson(listed)}[/AVAILABLE_TOOLS]"


def _mistral_calls(content: str, calls: list[ToolCall]) -> str:
    payload = [{"name": c.name, "arguments": c.arguments, **({"id": c.id} if c.id else {})} for c in calls]
    return (content + " " if content else "") + "[TOOL_CALLS] " + tojson(payload)


def _mistral_result(msg: Message) -> str:
    # mistral-common sends {"content": <JSON value or text>, "call_id": <id>}.
    try:
        value: Any = json.loads(msg.content)
    except json.JSONDecodeError:
        value = msg.content
    payload = {"content": value, **({"call_id": msg.tool_call_id} if msg.tool_call_id else {})}
    return tojson(payload)


def _mistral_parse(text: str) -> tuple[str, list[ToolCall]]:
    head, sep, rest = text.partition("[TOOL_CALLS]")
    if not sep:
        return text, []
    try:
        payload = json.loads(rest.strip())
    except json.JSONDecodeError:
        return text, []
    payload = payload if isinstance(payload, list) else [payload]
    calls = [_parse_call_json(p) for p in payload]
    if any(c is None for c in calls):
        return text, []
    for c, p in zip(calls, payload, strict=True):
        c.id = p.get("id")  # type: ignore[union-attr]
    return head.strip(), calls  # type: ignore[return-value]


# -- DeepSeek V3 / R1: special-token wrapped calls with a ```json block --

_DS_CALL = "<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n{args}\n```<｜tool▁call▁end｜>"
_DS_CALL_RE = re.compile(
    r"<｜tool▁call▁begin｜>\w*<｜tool▁sep｜>(.*?)\n```json\n(.*?)\n```<｜tool▁call▁end｜>", re.DOTALL
)


def _deepseek_definitions(tools: list[dict[str, Any]]) -> str:
    # The official DeepSeek V3/R1 templates render no tool definitions at all (callers
    # describe tools in the system prompt); we do the same so that prompts match.
    return ""


def _deepseek_calls(content: str, calls: list[ToolCall]) -> str:
    blocks = "\n".join(_DS_CALL.format(name=c.name, args=tojson(c.arguments)) for c in calls)
    return content + "<｜tool▁calls▁begin｜>" + blocks + "<｜tool▁calls▁end｜>"


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


def _identity(msg: Message) -> str:
    return msg.content


TOOL_FORMATS: dict[str, ToolFormat] = {
    f.name: f
    for f in (
        ToolFormat("default", _default_definitions, _default_calls, _identity, _qwen_parse),
        ToolFormat("qwen", _qwen_definitions, _qwen_calls, _identity, _qwen_parse),
        ToolFormat("llama3", _llama3_definitions, _llama3_calls, _llama3_result, _json_parse),
        ToolFormat("llama4", _llama3_definitions, _llama4_calls, _llama3_result, _llama4_parse),
        ToolFormat("glm4", _glm4_definitions, _glm4_calls, _identity, _glm4_parse),
        ToolFormat("mistral", _mistral_definitions, _mistral_calls, _mistral_result, _mistral_parse),
        ToolFormat("deepseek", _deepseek_definitions, _deepseek_calls, _identity, _deepseek_parse),
    )
}


def get_tool_format(name: str) -> ToolFormat:
    try:
        return TOOL_FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown tool format {name!r}") from None
