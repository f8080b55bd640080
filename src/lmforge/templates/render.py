"""Render a Conversation through a template's slots into text with its trained character spans.

The output is one string per conversation plus the character spans the model is trained
on (each assistant reply and the end-of-turn text it must emit), tagged with the assistant
turn they belong to. Tokenizing the whole string at once (see :mod:`.tokens`) gives the
same ids as ``tokenizer.apply_chat_template``; the spans become labels.

The two texts a reply holds besides its words are written here too: its thinking block
(which turns keep their ``<think>`` text, per family) and its tool calls, definitions and
results (per tool format, :data:`TOOL_TEXTS`; reading calls back out of a reply is
:mod:`.parse`'s job).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmforge.conversation import Conversation, Message, ToolCall
from lmforge.errors import DataError, LmforgeError
from lmforge.templates.results import Rendered
from lmforge.templates.slots import THINK_CLOSE, THINK_OPEN, TemplateSlots
from lmforge.templates.tokens import CLOSE, OPEN

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class _Builder:
    def __init__(self) -> None:
        self.pieces: list[tuple[str, int | None]] = []
        self.spans: list[tuple[int, int, int]] = []
        self.length = 0

    def add(self, text: str, turn: int | None = None) -> None:
        if not text:
            return
        if turn is not None:
            if self.spans and self.spans[-1][1] == self.length and self.spans[-1][2] == turn:
                self.spans[-1] = (self.spans[-1][0], self.length + len(text), turn)
            else:
                self.spans.append((self.length, self.length + len(text), turn))
        self.pieces.append((text, turn))
        self.length += len(text)

    def build(self) -> Rendered:
        return Rendered("".join(p for p, _ in self.pieces), self.spans, self.pieces)


def special_strings(tokenizer: PreTrainedTokenizerBase | None) -> dict[str, str]:
    """The tokenizer's BOS/EOS strings ('' where it has none)."""
    if tokenizer is None:
        return {"bos": "", "eos": ""}
    return {
        "bos": str(getattr(tokenizer, "bos_token", None) or ""),
        "eos": str(getattr(tokenizer, "eos_token", None) or ""),
    }


_SLOT_FIELD = re.compile(r"\{(content|bos|eos|system|tools|tools_header|turn)\}")


@functools.lru_cache(maxsize=1024)
def _slot_parts(slot: str) -> tuple[tuple[str, str | None], ...]:
    """A slot string split once into (literal text, field name or None) pairs."""
    parts: list[tuple[str, str | None]] = []
    position = 0
    for match in _SLOT_FIELD.finditer(slot):
        parts.append((slot[position : match.start()], match.group(1)))
        position = match.end()
    parts.append((slot[position:], None))
    return tuple(parts)


def fill(slot: str, specials: dict[str, str], content: str = "", **extra: str) -> str:
    """Put values into a slot string in one pass, so braces inside the values stay intact.

    The slot is parsed once and cached: the data stage fills a handful of slots millions of times.
    A field with no value is left as written.
    """
    if "{" not in slot:
        return slot
    out: list[str] = []
    for literal, name in _slot_parts(slot):
        out.append(literal)
        if name is None:
            continue
        if name == "content":
            out.append(content)
        elif name in extra:
            out.append(extra[name])
        elif name in specials:
            out.append(specials[name])
        else:
            out.append("{" + name + "}")
    return "".join(out)


def render(
    template: TemplateSlots,
    conv: Conversation,
    tokenizer: PreTrainedTokenizerBase | None,
    *,
    add_generation_prompt: bool = False,
    enable_thinking: bool = True,
    specials: dict[str, str] | None = None,
) -> Rendered:
    """Render one conversation. Raises DataError for a conversation the format cannot express.

    ``specials`` is :func:`special_strings` of ``tokenizer``, for callers rendering many
    conversations with one tokenizer (looked up here when not given).
    """
    t = template
    enable_thinking = enable_thinking is not False  # None (unset) means the family's default: on
    sp = specials if specials is not None else special_strings(tokenizer)
    tool_fmt = TOOL_TEXTS[t.tool_format]
    out = _Builder()
    messages = conv.messages

    def clean(text: str) -> str:
        return text.strip() if t.strip_content else text

    # System text: explicit (even ""), else the template's default, else none.
    has_system = conv.system is not None or bool(t.default_system)
    system_text = clean(conv.system if conv.system is not None else t.default_system)
    definitions = tool_fmt.definitions(conv.tools) if conv.tools else ""
    if definitions and t.tools_in == "system":
        join = t.system_with_tools if has_system else t.system_tools_only
        system_text = fill(join, sp, system_text, tools=definitions)
        has_system = True

    out.add(fill(t.prefix, sp))
    merge_system = t.system_style in ("first_user", "last_user", "none")
    if t.system_style == "block" and (has_system or t.system_always):
        tools_header = t.system_tools_header if conv.tools else ""
        out.add(fill(t.system, sp, system_text, tools_header=tools_header))

    user_indices = [i for i, m in enumerate(messages) if m.role == "user"]
    first_user = user_indices[0] if user_indices else -1
    last_user = user_indices[-1] if user_indices else -1
    system_at = last_user if t.system_style == "last_user" else first_user
    tools_at = last_user if t.tools_in == "before_last_user" else first_user
    media_count = {"image": 0, "video": 0, "audio": 0}
    turn = 0
    user_turn = 0
    last_query = _last_query_index(messages)
    for i, msg in enumerate(messages):
        prev = messages[i - 1].role if i else None
        nxt = messages[i + 1].role if i + 1 < len(messages) else None
        if msg.role == "user":
            user_turn += 1
            text = clean(msg.content)
            if i == first_user and definitions and t.tools_in == "first_user":
                text = definitions + text
            if i == system_at and merge_system and has_system:
                text = fill(t.system_user_join, sp, text, system=system_text)
            if i == tools_at and definitions and t.tools_in in ("before_first_user", "before_last_user"):
                out.add(definitions)
            # {turn}: the 1-based number of this user message (ChatGLM2 writes "[Round N]").
            out.add(fill(t.user, sp, _media(t, text, media_count), turn=str(user_turn)))
        elif msg.role == "tool":
            if prev != "tool":
                out.add(fill(t.tool_group_start, sp))
            out.add(fill(t.tool, sp, tool_fmt.result(msg)))
            if nxt != "tool":
                out.add(fill(t.tool_group_end, sp))
        elif msg.role == "assistant":
            header = t.assistant_header
            if prev == "tool" and t.assistant_header_after_tool is not None:
                header = t.assistant_header_after_tool
            out.add(fill(header, sp))
            thinking, body = assistant_body(
                t,
                msg,
                index=i,
                last_query=last_query,
                is_last=nxt is None,
                clean=clean,
                enable_thinking=enable_thinking,
            )
            slot = t.assistant
            if msg.tool_calls:
                body = tool_fmt.calls(body, msg.tool_calls)
                slot = t.assistant_tool_call if t.assistant_tool_call is not None else t.assistant
            if (
                not enable_thinking
                and thinking
                and thinking == t.no_thinking_prefix
                and slot.startswith("{content}")
            ):
                # Thinking switched off: the empty block belongs to the prompt, as at inference.
                out.add(thinking)
                thinking = ""
            out.add(fill(slot, sp, thinking + body) + fill(t.assistant_end, sp), turn)
            out.add(fill(t.assistant_after, sp))
            if nxt is None and not add_generation_prompt:
                out.add(fill(t.conversation_end, sp), turn)
            turn += 1
        else:  # pragma: no cover - Conversation validates roles
            raise DataError(f"message {i}: unknown role {msg.role!r}")

    if add_generation_prompt:
        out.spans.clear()  # a prompt trains nothing; the reply the model writes comes after it
        header = t.assistant_header
        if messages and messages[-1].role == "tool" and t.assistant_header_after_tool is not None:
            header = t.assistant_header_after_tool
        out.add(fill(header, sp))
        if not enable_thinking:
            out.add(fill(t.no_thinking_prefix, sp))
    return out.build()


def _media(t: TemplateSlots, text: str, count: dict[str, int]) -> str:
    """Swap dataset media placeholders (<image>, <video>, <audio>) for the family's own tokens.

    ``{index}`` in a media token is the 1-based number of that medium in the conversation
    (Qwen2-Audio writes "Audio 1: ...")."""
    for kind, token in (("image", t.image_token), ("video", t.video_token), ("audio", t.audio_token)):
        placeholder = f"<{kind}>"
        if not token or placeholder not in text:
            continue
        parts = text.split(placeholder)
        for k in range(1, len(parts)):
            count[kind] += 1
            parts[k] = token.replace("{index}", str(count[kind])) + parts[k]
        text = "".join(parts)
    return text


def _last_query_index(messages: list[Message]) -> int:
    """Index of the last real user query (Qwen3 keeps thinking only after it)."""
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if m.role != "user":
            continue
        content = m.content.strip(OPEN + CLOSE)  # as written, should .tokens have marked the tags
        if not (content.startswith("<tool_response>") and content.endswith("</tool_response>")):
            return i
    return len(messages) - 1


# -- thinking blocks: which assistant turns keep their <think> text, as each family's template does --
#  qwen3: a turn after the last real user query keeps its block (the final turn always shows one,
#    empty when there is no reasoning); earlier turns lose theirs.
#  deepseekr1: earlier turns lose their block (the official template cuts everything up to
#    </think>); the final turn keeps its reasoning so that it is trained.
#  none: a turn that carries reasoning shows it as a <think> block before the reply.


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
    template: TemplateSlots,
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


# -- tool texts: how each format lists tool definitions, writes a call and a result --------------


def tojson(value: object, indent: int | None = None) -> str:
    """JSON as transformers' chat templates write it (no ASCII escaping, default separators)."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


@dataclass(frozen=True)
class ToolTexts:
    """How one tool format writes: the definitions (for the system prompt or the first user turn),
    an assistant turn that calls tools, and one tool result. Templates name their format by string."""

    name: str
    definitions: Callable[[list[dict[str, Any]]], str]
    calls: Callable[[str, list[ToolCall]], str]
    result: Callable[[Message], str]


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    return tool.get("function", tool) if isinstance(tool, dict) else {}


# -- tagged JSON: <tool_call>{"name": ..., "arguments": ...}</tool_call> (Qwen, Qwen3, default) --

QWEN_TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)


QWEN_TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call>"
)


def _qwen_definitions(tools: list[dict[str, Any]]) -> str:
    return QWEN_TOOLS_INTRO + "".join("\n" + tojson(t) for t in tools) + QWEN_TOOLS_OUTRO


def _qwen_calls(content: str, calls: list[ToolCall]) -> str:
    blocks = [
        f'<tool_call>\n{{"name": "{c.name}", "arguments": {tojson(c.arguments)}}}\n</tool_call>'
        for c in calls
    ]
    return "\n".join(([content] if content else []) + blocks)


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

LLAMA3_TOOLS_INTRO = (
    "Given the following functions, please respond with a JSON for a function call "
    "with its proper arguments that best answers the given prompt.\n\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.'
    "Do not use variables.\n\n"
)


def _llama3_definitions(tools: list[dict[str, Any]]) -> str:
    return LLAMA3_TOOLS_INTRO + "".join(tojson(t, indent=4) + "\n\n" for t in tools)


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


def _llama4_calls(content: str, calls: list[ToolCall]) -> str:
    return "<|python_start|>" + content + "<|python_end|>" + "".join(_llama3_call(c) for c in calls)


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


# -- DeepSeek V3 / R1: special-token wrapped calls with a ```json block --

_DS_CALL = "<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n{args}\n```<｜tool▁call▁end｜>"


def _deepseek_definitions(tools: list[dict[str, Any]]) -> str:
    # The official DeepSeek V3/R1 templates render no tool definitions at all (callers
    # describe tools in the system prompt); we do the same so that prompts match.
    return ""


def _deepseek_calls(content: str, calls: list[ToolCall]) -> str:
    blocks = "\n".join(_DS_CALL.format(name=c.name, args=tojson(c.arguments)) for c in calls)
    return content + "<｜tool▁calls▁begin｜>" + blocks + "<｜tool▁calls▁end｜>"


def _identity(msg: Message) -> str:
    return msg.content


_PROBE_TOOL = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}


def tool_marker_texts(texts: ToolTexts) -> list[str]:
    """What a tool format writes around dummy values: its markers (for :meth:`marker_text`)."""
    out = []
    for make in (
        lambda: texts.definitions([_PROBE_TOOL]),
        lambda: texts.calls("c", [ToolCall("f", {"a": 1}, id="i")]),
        lambda: texts.result(Message("tool", "r", name="f", tool_call_id="i")),
    ):
        try:
            out.append(make())
        except (LmforgeError, KeyError, TypeError, ValueError):  # no such piece, so no markers in it
            continue
    return out


TOOL_TEXTS: dict[str, ToolTexts] = {
    f.name: f
    for f in (
        ToolTexts("default", _default_definitions, _default_calls, _identity),
        ToolTexts("qwen", _qwen_definitions, _qwen_calls, _identity),
        ToolTexts("llama3", _llama3_definitions, _llama3_calls, _llama3_result),
        ToolTexts("llama4", _llama3_definitions, _llama4_calls, _llama3_result),
        ToolTexts("glm4", _glm4_definitions, _glm4_calls, _identity),
        ToolTexts("mistral", _mistral_definitions, _mistral_calls, _mistral_result),
        ToolTexts("deepseek", _deepseek_definitions, _deepseek_calls, _identity),
    )
}
