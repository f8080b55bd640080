"""Step 2 of a sample's path: a dataset's files -> :class:`Records` (rows) -> Conversations.

JSON and JSON lines are parsed with Python's ``json`` so that a malformed file is reported
by line and column; csv, parquet and arrow go through pyarrow; ``.txt`` is one text per
line (pre-training). A folder is read as all its files, which must share one extension.
Hub datasets arrive as one arrow table (``registry.read_hub``).

A converter (:func:`make_converter`) maps one row of an alpaca, sharegpt or openai dataset to a
:class:`~lmforge.conversation.Conversation`. A row that cannot become one (a role out of order,
an unknown role, a function call that is not JSON, ...) raises :class:`BadRecord` with a short,
stable reason: the loader drops and counts it, or stops on it under ``strict: true``. Whether a
Conversation can be *trained on* is checked per stage when it is encoded (``data/encoding.py``).
"""

from __future__ import annotations

import bisect
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.conversation import Conversation, Message, ToolCall, tool_call_from_dict
from lmforge.data.registry import (
    EXTENSIONS,
    DatasetSpec,
    Tags,
    check_columns,
    data_files,
    detect_format,
    read_hub,
)
from lmforge.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

Converter = Callable[[dict[str, Any]], Conversation]


@dataclass
class Part:
    """The rows of one file: a list of dicts (json, txt) or an arrow table (csv, parquet, arrow, hub)."""

    path: str
    rows: list[dict[str, Any]] | pa.Table
    lines: list[int] | None = None  # the line each row starts on (json lines), for messages

    def __len__(self) -> int:
        return len(self.rows) if isinstance(self.rows, list) else self.rows.num_rows

    def column_names(self) -> list[str]:
        if not isinstance(self.rows, list):
            return list(self.rows.column_names)
        seen: dict[str, None] = {}
        for row in self.rows:
            for key in row:
                if key not in seen:
                    seen[key] = None
        return list(seen)

    def take(self, local: list[int] | range) -> list[dict[str, Any]]:
        if isinstance(self.rows, list):
            if isinstance(local, range) and local.step == 1:
                return self.rows[local.start : local.stop]
            return [self.rows[i] for i in local]
        if isinstance(local, range) and local.step == 1:
            return self.rows.slice(local.start, len(local)).to_pylist()
        return self.rows.take(list(local)).to_pylist()


@dataclass
class Records:
    """All rows of one dataset, in file order, addressable by a global index."""

    parts: list[Part]
    _columns: list[str] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    @property
    def column_names(self) -> list[str]:
        if self._columns is None:
            seen: dict[str, None] = {}
            for part in self.parts:
                for name in part.column_names():
                    seen.setdefault(name, None)
            self._columns = list(seen)
        return self._columns

    def rows(self, indices: list[int] | range) -> list[dict[str, Any]]:
        """The rows at ``indices`` (global), in that order."""
        if isinstance(indices, range) and indices.step == 1 and len(self.parts) == 1:
            return self.parts[0].take(indices)
        out: list[dict[str, Any]] = []
        offsets = self._offsets()
        run_part = -1
        run_local: list[int] = []
        for i in indices:
            p = _part_of(offsets, i)
            if p != run_part and run_local:
                out.extend(self.parts[run_part].take(run_local))
                run_local = []
            run_part = p
            run_local.append(i - offsets[p])
        if run_local:
            out.extend(self.parts[run_part].take(run_local))
        return out

    def locate(self, index: int) -> str:
        """``file F, record N (line L)`` for messages; N counts from 0 within the file."""
        offsets = self._offsets()
        p = _part_of(offsets, index)
        part = self.parts[p]
        local = index - offsets[p]
        line = f" (line {part.lines[local]})" if part.lines else ""
        return f"{part.path}, record {local}{line}"

    def files(self) -> list[str]:
        return [p.path for p in self.parts]

    def _offsets(self) -> list[int]:
        offsets, total = [], 0
        for part in self.parts:
            offsets.append(total)
            total += len(part)
        return offsets


def _part_of(offsets: list[int], index: int) -> int:
    return bisect.bisect_right(offsets, index) - 1


# ---------------------------------------------------------------- files


def open_dataset(
    spec: DatasetSpec, *, cache_dir: str | None = None, token: str | None = None
) -> tuple[Records, DatasetSpec]:
    """A dataset's records, and its spec completed from (and checked against) their columns."""
    records = read_records(spec, cache_dir=cache_dir, token=token)
    first_row = records.rows(range(1))[0] if len(records) else None
    spec = detect_format(spec, records.column_names, first_row)
    check_columns(spec, records.column_names)
    return records, spec


def read_records(spec: DatasetSpec, *, cache_dir: str | None = None, token: str | None = None) -> Records:
    """Every row of the dataset, read into memory (arrow tables stay columnar)."""
    if spec.source != "file":
        return Records([Part(*read_hub(spec, cache_dir=cache_dir, token=token))])
    parts = [read_file(path, spec) for path in data_files(spec)]
    records = Records(parts)
    if len(records) == 0:
        raise DataError(f"{spec.describe()}: has no records; add data or remove it from 'dataset'")
    return records


def read_file(path: Path, spec: DatasetSpec | None = None) -> Part:
    """One file's rows, by extension."""
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type '{path.suffix}'; use one of {', '.join(EXTENSIONS)}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    return reader(path)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None


def _read_json(path: Path) -> Part:
    text = _read_text(path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return _json_lines(path, text)  # a .json file holding JSON lines, as datasets accepts
        raise DataError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of records (objects), got {type(data).__name__}")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(
                f"{path}, record {i}: expected an object with named fields, got {type(row).__name__}"
            )
    return Part(str(path), data)


def _read_jsonl(path: Path) -> Part:
    text = _read_text(path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    return _json_lines(path, text)


def _json_lines(path: Path, text: str) -> Part:
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    decode = json.loads
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = decode(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON at line {number}, column {exc.colno}: {exc.msg}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
        lines.append(number)
    return Part(str(path), rows, lines)


def _read_txt(path: Path) -> Part:
    text = _read_text(path)
    rows = [{"text": line} for line in text.splitlines() if line.strip()]
    if not rows:
        raise DataError(f"{path}: the file is empty")
    return Part(str(path), rows)


def _read_csv(path: Path) -> Part:
    # why: datasets and pyarrow load only when data is read or built, not on import
    import pyarrow as pa
    from pyarrow import csv

    try:
        table = csv.read_csv(path)
    except (pa.ArrowInvalid, pa.ArrowException) as exc:
        message = str(exc).splitlines()[0]
        if "Empty CSV file" in message:
            raise DataError(f"{path}: the file is empty") from None
        raise DataError(f"{path}: cannot read CSV: {message}") from None
    return Part(str(path), table)


def _read_parquet(path: Path) -> Part:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot read parquet: {str(exc).splitlines()[0]}") from None
    return Part(str(path), table)


def _read_arrow(path: Path) -> Part:
    """Arrow IPC stream (what ``datasets`` writes) or IPC file."""
    import pyarrow as pa

    errors = []
    for opener in (pa.ipc.open_stream, pa.ipc.open_file):
        try:
            with pa.memory_map(str(path)) as source:
                table = opener(source).read_all()
            return Part(str(path), table)
        except (pa.ArrowException, OSError) as exc:
            errors.append(str(exc).splitlines()[0])
    raise DataError(f"{path}: cannot read arrow data: {errors[-1]}")


_READERS: dict[str, Callable[[Path], Part]] = {
    ".json": _read_json,
    ".jsonl": _read_jsonl,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
    ".arrow": _read_arrow,
    ".txt": _read_txt,
}


# ---------------------------------------------------------------- rows -> Conversations


class BadRecord(Exception):
    """A record that cannot become a sample. ``reason`` is what gets counted."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


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
