"""alpaca, sharegpt and openai records -> :class:`~lmforge.conversation.Conversation`.

A converter maps one row (a dict) to a Conversation. A row that cannot become a sample
(a role out of order, an unknown role, a function call that is not JSON, ...) raises
:class:`BadRecord` with a short, stable reason: the loader drops and counts it, or stops
on it under ``strict: true``. Whether a Conversation can be *trained on* (it ends with an
assistant reply, nothing empty) is checked per stage in :mod:`lmforge.data.checks`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.conversation import Conversation, Message, ToolCall, tool_call_from_dict
from lmforge.data.registry import did_you_mean
from lmforge.data.spec import OPENAI_TAGS, Columns, DatasetSpec, Tags
from lmforge.errors import DataError

Converter = Callable[[dict[str, Any]], Conversation]


class BadRecord(Exception):
    """A record that cannot become a sample. ``reason`` is what gets counted."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------- column checks


def detect_format(
    spec: DatasetSpec, column_names: list[str], first_row: dict[str, Any] | None
) -> DatasetSpec:
    """For a dataset given as a bare path: read formatting and columns off its data."""
    if not spec.auto_format:
        return spec
    cols = set(column_names)
    optional = {role: role for role in ("system", "tools", "images", "videos", "audios") if role in cols}
    if "chosen" in cols and "rejected" in cols:  # preference pairs: both reply columns by their usual names
        optional.update(chosen="chosen", rejected="rejected")
        spec = dataclasses.replace(spec, ranking=True)
    for messages_column in ("messages", "conversations"):
        if messages_column in cols:
            sample = (first_row or {}).get(messages_column) or [{}]
            keys = (
                set(sample[0])
                if isinstance(sample, list) and sample and isinstance(sample[0], dict)
                else set()
            )
            openai_style = "role" in keys or messages_column == "messages" and "from" not in keys
            formatting = "openai" if openai_style else "sharegpt"
            columns = Columns(prompt=None, query=None, response=None, messages=messages_column, **optional)
            tags = OPENAI_TAGS if openai_style else Tags()
            return dataclasses.replace(spec, formatting=formatting, columns=columns, tags=tags)
    if "instruction" in cols:
        history = "history" if "history" in cols else None
        columns = Columns(history=history, **optional)
        return dataclasses.replace(spec, formatting="alpaca", columns=columns)
    if "text" in cols:
        return dataclasses.replace(
            spec, formatting="alpaca", columns=Columns(prompt="text", query=None, response=None)
        )
    raise DataError(
        f"{spec.describe()}: cannot tell its format from its columns ({', '.join(column_names) or 'none'}); "
        "expected instruction/output (alpaca), conversations (sharegpt), messages (openai) or text; "
        "or register it in dataset_info.json with formatting and columns"
    )


def check_columns(spec: DatasetSpec, column_names: list[str]) -> None:
    """Every column the registration names must exist; the main one must exist by default too."""
    present = set(column_names)
    needed = list(spec.explicit_columns)
    main = "prompt" if spec.formatting == "alpaca" else "messages"
    if main not in needed:
        needed.append(main)
    for role in needed:
        column = getattr(spec.columns, role)
        if column and column not in present:
            hint = did_you_mean(column, present)
            raise DataError(
                f"{spec.describe()}: columns.{role} names column '{column}', which the data does not have{hint}; "
                f"its columns are: {', '.join(column_names) or 'none'}"
            )


# ---------------------------------------------------------------- converters


def make_converter(spec: DatasetSpec) -> Converter:
    """The row -> Conversation function for ``spec``'s formatting."""
    if spec.formatting == "alpaca":
        convert = _alpaca(spec)
    elif spec.formatting == "sharegpt":
        convert = _sharegpt(spec)
    else:
        convert = _openai(spec)
    extras = _extras(spec)
    if extras is None:
        return convert

    def with_extras(row: dict[str, Any]) -> Conversation:
        conv = convert(row)
        extras(row, conv)
        return conv

    return with_extras


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _alpaca(spec: DatasetSpec) -> Converter:
    c = spec.columns
    prompt_col, query_col, response_col = c.prompt, c.query, c.response
    history_col, system_col, tools_col = c.history, c.system, c.tools

    def convert(row: dict[str, Any]) -> Conversation:
        messages: list[Message] = []
        if history_col:
            history = row.get(history_col)
            if history:
                if not isinstance(history, list):
                    raise BadRecord("malformed history", "history must be a list of [prompt, response] pairs")
                for turn in history:
                    if not isinstance(turn, (list, tuple)) or len(turn) != 2:
                        raise BadRecord(
                            "malformed history", "each history entry must be a [prompt, response] pair"
                        )
                    messages.append(Message("user", _text(turn[0])))
                    messages.append(Message("assistant", _text(turn[1])))
        parts = []
        if prompt_col:
            value = row.get(prompt_col)
            if value:
                parts.append(_text(value))
        if query_col:
            value = row.get(query_col)
            if value:
                parts.append(_text(value))
        messages.append(Message("user", "\n".join(parts)))
        if response_col:
            response = row.get(response_col)
            if isinstance(response, list):  # LLaMA-Factory allows a one-item list
                response = response[0] if len(response) == 1 else None
            if response is not None:
                messages.append(Message("assistant", _text(response)))
        system = _text(row.get(system_col)) if system_col and row.get(system_col) is not None else None
        tools = _tools(row.get(tools_col)) if tools_col else None
        return Conversation(messages=messages, system=system, tools=tools)

    return convert


def _sharegpt(spec: DatasetSpec) -> Converter:
    t = spec.tags
    messages_col, system_col, tools_col = spec.columns.messages, spec.columns.system, spec.columns.tools
    role_key, content_key = t.role_tag, t.content_tag
    prompt_roles = {t.user_tag, t.observation_tag}
    reply_roles = {t.assistant_tag, t.function_tag}
    known = prompt_roles | reply_roles | {t.system_tag}

    def convert(row: dict[str, Any]) -> Conversation:
        raw = row.get(messages_col) if messages_col else None
        if not isinstance(raw, list) or not raw:
            raise BadRecord("no messages", f"column '{messages_col}' is empty or not a list")
        system = _text(row.get(system_col)) if system_col and row.get(system_col) is not None else None
        start = 0
        first = raw[0]
        if isinstance(first, dict) and first.get(role_key) == t.system_tag:
            system = _text(first.get(content_key))
            start = 1
        messages: list[Message] = []
        for position, item in enumerate(raw[start:]):
            index = position + start
            if not isinstance(item, dict):
                raise BadRecord("malformed message", f"message {index} is not an object")
            role = item.get(role_key)
            if role not in known:
                raise BadRecord("unknown role", f"message {index} has {role_key}={role!r}")
            expected = prompt_roles if position % 2 == 0 else reply_roles
            if role not in expected:
                raise BadRecord(
                    "roles out of order",
                    f"message {index} is '{role}' where {' or '.join(sorted(repr(r) for r in expected))} belongs",
                )
            content = _text(item.get(content_key))
            if role == t.user_tag:
                messages.append(Message("user", content))
            elif role == t.observation_tag:
                messages.append(Message("tool", content))
            elif role == t.assistant_tag:
                messages.append(Message("assistant", content))
            else:
                messages.append(Message("assistant", "", tool_calls=_function_calls(content, index)))
        tools = _tools(row.get(tools_col)) if tools_col else None
        return Conversation(messages=messages, system=system, tools=tools)

    return convert


def _openai(spec: DatasetSpec) -> Converter:
    t = spec.tags
    messages_col, system_col, tools_col = spec.columns.messages, spec.columns.system, spec.columns.tools
    role_map = {
        t.user_tag: "user",
        t.assistant_tag: "assistant",
        t.observation_tag: "tool",
        t.system_tag: "system",
        "tool": "tool",
        "function": "tool",
        "developer": "system",
    }

    def convert(row: dict[str, Any]) -> Conversation:
        raw = row.get(messages_col) if messages_col else None
        if not isinstance(raw, list) or not raw:
            raise BadRecord("no messages", f"column '{messages_col}' is empty or not a list")
        normalised = []
        for index, item in enumerate(raw):
            if not isinstance(item, dict):
                raise BadRecord("malformed message", f"message {index} is not an object")
            role = item.get(t.role_tag)
            if role not in role_map:
                raise BadRecord("unknown role", f"message {index} has {t.role_tag}={role!r}")
            message = dict(item)
            message["role"] = role_map[role]
            message["content"] = item.get(t.content_tag)
            normalised.append(message)
        try:
            conv = Conversation.from_openai({"messages": normalised})
        except ValueError as exc:
            reason = "roles out of order" if "must come first" in str(exc) else "malformed message"
            raise BadRecord(reason, str(exc)) from None
        if system_col and row.get(system_col) is not None and conv.system is None:
            conv.system = _text(row.get(system_col))
        if tools_col:
            conv.tools = _tools(row.get(tools_col))
        return conv

    return convert


def _function_calls(content: str, index: int) -> list[ToolCall]:
    """A sharegpt function_call turn: ``{"name": ..., "arguments": ...}`` or a list of them, as JSON."""
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        raise BadRecord("invalid function call", f"message {index} is not JSON") from None
    calls = data if isinstance(data, list) else [data]
    try:
        return [tool_call_from_dict(call) for call in calls]
    except ValueError as exc:
        raise BadRecord("invalid function call", f"message {index}: {exc}") from None


def _tools(value: Any) -> list[dict[str, Any]] | None:
    """A tools column: a JSON string or a list of function definitions; empty means none."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BadRecord("invalid tools", "the tools column is not valid JSON") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise BadRecord("invalid tools", "tools must be a list of function definitions")
    return value or None


def _extras(spec: DatasetSpec) -> Callable[[dict[str, Any], Conversation], None] | None:
    """Media, preference replies and KTO tags, shared by every formatting."""
    c = spec.columns
    media = [(attr, getattr(c, attr)) for attr in ("images", "videos", "audios") if getattr(c, attr)]
    chosen_col, rejected_col, kto_col = c.chosen, c.rejected, c.kto_tag
    if not (media or chosen_col or rejected_col or kto_col):
        return None
    media_dir = spec.media_dir
    tags = spec.tags

    def apply(row: dict[str, Any], conv: Conversation) -> None:
        for attr, column in media:
            setattr(conv, attr, _media_paths(row.get(column), media_dir))
        if chosen_col:
            conv.chosen = _reply(row.get(chosen_col), tags, "chosen")
        if rejected_col:
            conv.rejected = _reply(row.get(rejected_col), tags, "rejected")
        if kto_col:
            conv.kto_tag = _flag(row.get(kto_col))

    return apply


def _reply(value: Any, tags: Tags, what: str) -> Message | None:
    if value is None:
        return None
    if isinstance(value, dict):
        content = value.get(tags.content_tag, value.get("content"))
        return Message("assistant", _text(content))
    return Message("assistant", _text(value))


def _flag(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise BadRecord("invalid kto_tag", f"kto_tag {value!r} is not true or false")


def _media_paths(value: Any, media_dir: Path | None) -> list[Any]:
    """Media entries, with relative paths that exist under ``media_dir`` made absolute."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, str) and media_dir is not None and not os.path.isabs(item) and "://" not in item:
            candidate = os.path.join(media_dir, item)
            out.append(candidate if os.path.exists(candidate) else item)
        else:
            out.append(item)
    return out
