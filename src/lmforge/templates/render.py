"""Render a Conversation through a Template into text with its trained character spans.

The output is one string per conversation plus the character spans the model is trained
on (each assistant reply and the end-of-turn text it must emit), tagged with the assistant
turn they belong to. Tokenizing the whole string at once (see :mod:`.encode`) gives the
same ids as ``tokenizer.apply_chat_template``; the spans become labels.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from lmforge.conversation import Conversation, Message
from lmforge.errors import DataError
from lmforge.templates.plaintext import CLOSE, OPEN
from lmforge.templates.reasoning import assistant_body
from lmforge.templates.spec import Template
from lmforge.templates.tools import get_tool_format


@dataclass
class Rendered:
    """A conversation's text, and (start, end, assistant_turn) spans of the trained parts.

    ``plain_spans`` are the character spans of conversation text that hold special-token
    strings to be tokenized as plain text (found by :mod:`.plaintext`; empty nearly always).
    """

    text: str
    spans: list[tuple[int, int, int]] = field(default_factory=list)
    pieces: list[tuple[str, int | None]] = field(default_factory=list)
    plain_spans: list[tuple[int, int]] = field(default_factory=list)

    @property
    def last_turn(self) -> int:
        return max((t for _, _, t in self.spans), default=-1)


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


def special_strings(tokenizer: Any) -> dict[str, str]:
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
    template: Template,
    conv: Conversation,
    tokenizer: Any,
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
    tool_fmt = get_tool_format(t.tool_format)
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


def _media(t: Template, text: str, count: dict[str, int]) -> str:
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
        content = m.content.strip(OPEN + CLOSE)  # as written, should plaintext have marked the tags
        if not (content.startswith("<tool_response>") and content.endswith("</tool_response>")):
            return i
    return len(messages) - 1
