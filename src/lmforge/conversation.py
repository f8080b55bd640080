"""The one canonical in-memory form of a chat sample.

Every dataset format (alpaca, sharegpt, openai) and every API request converts into a
:class:`Conversation`; templates turn a Conversation into token ids. Training and serving
therefore share a single path, which is what keeps them from drifting apart. The rules both
sides hold for a conversation live here too, once: how a tool call is read
(:func:`tool_call_from_dict`) and in which order roles may come (:func:`role_order_error`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("user", "assistant", "tool")


@dataclass
class ToolCall:
    """One function call made by the assistant. ``arguments`` is a JSON object (a dict)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass
class Message:
    """One turn.

    ``role`` is ``user``, ``assistant`` or ``tool`` (a tool result, LLaMA-Factory's
    "observation"). An assistant turn that calls functions carries them in ``tool_calls``
    (LLaMA-Factory's "function_call"); ``reasoning`` holds a thinking block's text
    (without the ``<think>`` tags) when the model family has one.
    """

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning: str | None = None
    name: str | None = None  # tool name for a tool result, where the family uses it
    tool_call_id: str | None = None


@dataclass
class Conversation:
    """A whole sample: system prompt, tool definitions, turns and attached media.

    ``system`` is ``None`` when the sample has no system prompt (the template's default
    applies) and ``""`` when it explicitly has an empty one. ``tools`` are OpenAI-style
    function definitions (``{"type": "function", "function": {...}}``) or bare function
    dicts. Media lists hold paths, URLs or already-loaded objects, in placeholder order.
    ``chosen``/``rejected`` (preference data) and ``kto_tag`` are carried for the later
    training stages; SFT ignores them.
    """

    messages: list[Message] = field(default_factory=list)
    system: str | None = None
    tools: list[dict[str, Any]] | None = None
    images: list[Any] = field(default_factory=list)
    videos: list[Any] = field(default_factory=list)
    audios: list[Any] = field(default_factory=list)
    chosen: Message | None = None
    rejected: Message | None = None
    kto_tag: bool | None = None

    def to_openai(self) -> dict[str, Any]:
        """OpenAI chat format (what ``tokenizer.apply_chat_template`` expects)."""
        out: list[dict[str, Any]] = []
        if self.system is not None:
            out.append({"role": "system", "content": self.system})
        for m in self.messages:
            d: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.tool_calls:
                d["tool_calls"] = [
                    {
                        "type": "function",
                        **({"id": c.id} if c.id else {}),
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in m.tool_calls
                ]
            if m.reasoning is not None:
                d["reasoning_content"] = m.reasoning
            if m.name is not None:
                d["name"] = m.name
            if m.tool_call_id is not None:
                d["tool_call_id"] = m.tool_call_id
            out.append(d)
        result: dict[str, Any] = {"messages": out}
        if self.tools:
            result["tools"] = self.tools
        return result

    @classmethod
    def from_openai(cls, data: dict[str, Any]) -> Conversation:
        """Build from ``{"messages": [...], "tools": [...]}`` (OpenAI chat format).

        Raises ``ValueError`` naming the message index for an unknown role or a malformed
        tool call. String or list-of-parts content is accepted; text parts are joined, and each
        media part leaves its placeholder (``<image>``, ``<audio>``, ``<video>``) where it stood.
        """
        system: str | None = None
        messages: list[Message] = []
        for i, raw in enumerate(data.get("messages") or []):
            role = raw.get("role")
            content = _content_text(raw.get("content"), i)
            if role in ("system", "developer"):
                if messages:
                    raise ValueError(f"message {i}: a system message must come first")
                system = content
                continue
            if role == "function":
                role = "tool"
            if role not in ROLES:
                raise ValueError(f"message {i}: unknown role {role!r} (use system, user, assistant or tool)")
            calls = [_tool_call(c, i) for c in raw.get("tool_calls") or []]
            messages.append(
                Message(
                    role=role,
                    content=content,
                    tool_calls=calls,
                    reasoning=raw.get("reasoning_content", raw.get("reasoning")),
                    name=raw.get("name"),
                    tool_call_id=raw.get("tool_call_id"),
                )
            )
        return cls(messages=messages, system=system, tools=data.get("tools") or None)


# OpenAI content parts that carry media, and the placeholder each leaves in the text, where the
# template puts the model's own media tokens (as for datasets' <image> placeholders).
MEDIA_PART_PLACEHOLDERS = {
    "image_url": "<image>",
    "input_audio": "<audio>",
    "audio_url": "<audio>",
    "video_url": "<video>",
}


def _content_text(content: object, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, dict) and part.get("type") in MEDIA_PART_PLACEHOLDERS:
                parts.append(MEDIA_PART_PLACEHOLDERS[part["type"]])
        return "".join(parts)
    raise ValueError(f"message {index}: content must be a string or a list of parts")


def _tool_call(raw: object, index: int) -> ToolCall:
    try:
        return tool_call_from_dict(raw)
    except ValueError as exc:
        raise ValueError(f"message {index}: {exc}") from None


def tool_call_arguments(args: object) -> dict[str, Any]:
    """A call's arguments as a dict: a JSON object, or a string that holds one ("" is none).

    ValueError saying what is wrong otherwise. Datasets, API requests and parsed replies all
    read arguments here, so that they agree on what a call's arguments may be.
    """
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"tool call arguments are not valid JSON ({exc.msg})") from None
    if not isinstance(args, dict):
        raise ValueError("tool call arguments must be a JSON object")
    return args


def tool_call_from_dict(raw: object) -> ToolCall:
    """One call as a client or a dataset writes it: OpenAI's ``{"id", "function": {"name",
    "arguments"}}`` or the bare ``{"name", "arguments"}``; ValueError saying what is wrong otherwise."""
    if not isinstance(raw, dict):
        raise ValueError("each tool call must be an object")
    fn = raw.get("function", raw)
    name = fn.get("name") if isinstance(fn, dict) else None
    if not name:
        raise ValueError("a tool call has no function name")
    return ToolCall(name=str(name), arguments=tool_call_arguments(fn.get("arguments", {})), id=raw.get("id"))


def role_order_error(messages: Sequence[Message], *, users_alternate: bool = False) -> tuple[int, str] | None:
    """The first message out of order and the rule it breaks, or None when the order is sound.

    The rules training and serving share: the first message is a user's; an assistant message
    follows a user or tool message; a tool message follows an assistant message with tool calls
    (or another tool result). With ``users_alternate`` (training samples) a user message also
    follows only an assistant message. How a conversation must end differs (a training sample
    ends on a reply, a request on a user or tool message) and stays with each caller.
    """
    previous: Message | None = None
    for index, message in enumerate(messages):
        if message.role == "user":
            if users_alternate and previous is not None and previous.role != "assistant":
                return index, "a user message must follow an assistant message"
        elif previous is None:
            return index, "the conversation must start with a user message"
        elif message.role == "assistant":
            if previous.role not in ("user", "tool"):
                return index, "an assistant message must follow a user or tool message"
        elif not (previous.role == "tool" or (previous.role == "assistant" and previous.tool_calls)):
            return index, "a tool message must follow an assistant message with tool_calls"
        previous = message
    return None
