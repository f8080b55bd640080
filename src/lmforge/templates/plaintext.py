"""Conversation text stays text: special-token strings inside it are tokenized as plain characters.

A chat prompt is rendered to one string and tokenized whole, and a fast tokenizer turns every
special-token string it finds into its control token, wherever the string came from. A user
who types ``<|im_end|>\\n<|im_start|>system`` would so write a system turn of their own. Here
the template's own markers stay control tokens and the same strings inside conversation text
(message content, names, tool-call arguments, tool results, tool definitions) are split.

The common case costs one regex search per conversation string: only a conversation whose text
holds a control string is rendered again with every such occurrence wrapped in two Unicode
noncharacters (they pass through every formatter, JSON included, untouched), which gives the
character spans to split; that one sample is then tokenized run by run between the template's
own control tokens, which is how the tokenizer treats those runs anyway.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from lmforge.conversation import Conversation, Message, ToolCall
from lmforge.errors import LmforgeError
from lmforge.templates.reasoning import THINK_CLOSE, THINK_OPEN
from lmforge.templates.tools import get_tool_format

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lmforge.templates.render import Rendered
    from lmforge.templates.results import EncodedSample
    from lmforge.templates.spec import Template

# Unicode noncharacters, reserved for a program's internal use: they open and close a forged span.
OPEN, CLOSE = "\ufdd0", "\ufdd1"
# The split tokenizer's stand-in for "a control token came just before" (see ``_gap_texts``).
_AFTER_CONTROL = "\ufdd2"
_PROBE_TOOL = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}


class ControlTokens:
    """The control-token strings of one tokenizer under one template, and how to find them."""

    def __init__(self, chosen: dict[str, int], backend: Any, unflagged: list[str]) -> None:
        self.strings = frozenset(chosen)
        self.ids = frozenset(chosen.values())
        self.pattern = re.compile(_trie_regex(sorted(chosen))) if chosen else None
        self.backend = backend  # the fast tokenizer's Rust backend (None: a slow tokenizer, never split)
        self.unflagged = unflagged  # chosen strings the tokenizer does not flag special

    def found(self, text: str) -> bool:
        return self.pattern is not None and self.pattern.search(text) is not None

    def in_conversation(self, conv: Conversation) -> bool:
        """Whether any text of the conversation holds a control string (the data stage counts these)."""
        return self.pattern is not None and any(self.found(text) for text in conversation_texts(conv))

    def mark(self, text: str) -> str:
        assert self.pattern is not None
        return self.pattern.sub(lambda m: OPEN + m.group(0) + CLOSE, text)

    @functools.cached_property
    def split_backend(self) -> Any:
        """A copy of the backend that splits the control strings (built on first need: about a
        second for a large vocabulary). Only special tokens split on request, so the others are
        flagged special in the copy; it also knows ``_AFTER_CONTROL``."""
        from tokenizers import AddedToken, Tokenizer

        copy = Tokenizer.from_str(self.backend.to_str())
        copy.no_truncation()
        copy.no_padding()
        copy.add_special_tokens([AddedToken(text, special=True, normalized=False) for text in self.unflagged])
        copy.add_tokens([AddedToken(_AFTER_CONTROL, special=False, normalized=False)])
        copy.encode_special_tokens = True
        return copy


_CACHE: weakref.WeakKeyDictionary[Any, dict[Template, ControlTokens]] = weakref.WeakKeyDictionary()


def control_tokens(tokenizer: PreTrainedTokenizerBase, template: Template) -> ControlTokens:
    """The tokenizer's special tokens, plus its other added tokens that the template writes as markers
    (DeepSeek's ``<｜User｜>`` is not flagged special). Plain words (ChatGLM3's ``sop``) are left out:
    they are no turn markers, and the tokenizer finds them inside ordinary words."""
    try:
        per_template = _CACHE.setdefault(tokenizer, {})
    except TypeError:  # an object that takes no weak reference: computed each time
        per_template = {}
    if template not in per_template:
        per_template[template] = _control_tokens(tokenizer, template)
    return per_template[template]


def _control_tokens(tokenizer: Any, template: Template) -> ControlTokens:
    literal = _literal_text(template)
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    chosen: dict[str, int] = {}
    for token_id, token in decoder.items():
        text = str(token.content)
        if not text.strip() or text.isalnum():
            continue
        if token.special or text in literal:
            chosen[text] = int(token_id)
    if not decoder:
        for text in getattr(tokenizer, "all_special_tokens", []):
            if text.strip() and not text.isalnum():
                chosen[text] = int(tokenizer.convert_tokens_to_ids(text))
    backend = getattr(tokenizer, "_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None and not hasattr(backend, "to_str"):
        backend = None
    unflagged = [
        text for token in decoder.values() if (text := str(token.content)) in chosen and not token.special
    ]
    return ControlTokens(chosen, backend, unflagged)


def _literal_text(template: Template) -> str:
    """Every string the template writes by itself: its slots, and its tool format around dummy values."""
    parts = [value for value in dataclasses.asdict(template).values() if isinstance(value, str)]
    parts += list(template.stop_words)
    if template.thinking != "none":
        parts += [THINK_OPEN, THINK_CLOSE]
    tools = get_tool_format(template.tool_format)
    for make in (
        lambda: tools.definitions([_PROBE_TOOL]),
        lambda: tools.calls("c", [ToolCall("f", {"a": 1}, id="i")]),
        lambda: tools.result(Message("tool", "r", name="f", tool_call_id="i")),
    ):
        try:
            parts.append(make())
        except (LmforgeError, KeyError, TypeError, ValueError):  # no such piece, so no markers in it
            continue
    return "\n".join(parts)


def _trie_regex(strings: list[str]) -> str:
    """One regex for many literal strings, factored by common prefix (hundreds of Llama 3 tokens
    start with ``<|``) and trying the longest match first, as the tokenizer does."""
    trie: dict[str, Any] = {}
    for text in strings:
        node = trie
        for char in text:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        ends = "" in node
        branches = [re.escape(char) + emit(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if ends:
            return f"(?:{body})?"
        return body

    return emit(trie)


def conversation_texts(conv: Conversation) -> Iterator[str]:
    """Every string of a conversation that a client or a dataset wrote."""
    if conv.system:
        yield conv.system
    for message in conv.messages:
        yield message.content
        if message.reasoning:
            yield message.reasoning
        if message.name:
            yield message.name
        if message.tool_call_id:
            yield message.tool_call_id
        for call in message.tool_calls:
            yield call.name
            if call.id:
                yield call.id
            yield from _json_strings(call.arguments)
    if conv.tools:
        yield from _json_strings(conv.tools)


def _json_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _json_strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _json_strings(item)


def encode_conversations(
    template: Template,
    tokenizer: PreTrainedTokenizerBase,
    convs: list[Conversation],
    render_one: Callable[[Conversation], Rendered],
    *,
    split_special_tokens: bool | None,
    train_on_prompt: bool,
    mask_history: bool,
) -> list[EncodedSample]:
    """Render and encode conversations (``Template.encode_batch``): each is checked for control
    strings in its text (``EncodedSample.special_text``) and, when they are to be split, rendered
    marked so that its forged spans are known."""
    from lmforge.templates.encode import encode_rendered

    if split_special_tokens is None:
        split_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
    control = control_tokens(tokenizer, template)
    flagged = [control.in_conversation(conv) for conv in convs]
    split = split_special_tokens and control.backend is not None
    rendered = [
        unmark(render_one(mark_conversation(conv, control, template)))
        if split and special_text
        else render_one(conv)
        for conv, special_text in zip(convs, flagged, strict=True)
    ]
    samples = encode_rendered(
        tokenizer, rendered, train_on_prompt=train_on_prompt, mask_history=mask_history, control=control
    )
    for sample, special_text in zip(samples, flagged, strict=True):
        sample.special_text = special_text
    return samples


def mark_conversation(conv: Conversation, control: ControlTokens, template: Template) -> Conversation:
    """The conversation with each control string in its text wrapped in ``OPEN``/``CLOSE``.

    A thinking template's ``<think>`` tags inside an assistant reply are left alone: the template
    reads them as the reasoning's bounds, as the family's official template does.
    """
    keep_think = template.thinking != "none"

    def mark(text: str | None, *, assistant: bool = False) -> Any:
        if not text or not control.found(text):
            return text
        if assistant and keep_think:
            pieces = re.split(f"({re.escape(THINK_OPEN)}|{re.escape(THINK_CLOSE)})", text)
            return "".join(p if p in (THINK_OPEN, THINK_CLOSE) else control.mark(p) for p in pieces)
        return control.mark(text)

    def mark_json(value: Any) -> Any:
        if isinstance(value, str):
            return mark(value)
        if isinstance(value, dict):
            return {mark(str(k)): mark_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark_json(v) for v in value]
        return value

    messages = [
        dataclasses.replace(
            m,
            content=mark(m.content, assistant=m.role == "assistant"),
            reasoning=mark(m.reasoning),
            name=mark(m.name),
            tool_call_id=mark(m.tool_call_id),
            tool_calls=[
                dataclasses.replace(c, name=mark(c.name), id=mark(c.id), arguments=mark_json(c.arguments))
                for c in m.tool_calls
            ],
        )
        for m in conv.messages
    ]
    return dataclasses.replace(
        conv,
        system=mark(conv.system),
        messages=messages,
        tools=mark_json(conv.tools) if conv.tools else conv.tools,
    )


def unmark(rendered: Rendered) -> Rendered:
    """Drop the marks from a rendering, keeping the spans they enclosed as ``plain_spans``."""
    from lmforge.templates.render import Rendered

    text = rendered.text
    # new position of each old position: old minus the marks before it
    removed = 0
    moved: list[int] = []
    plain: list[tuple[int, int]] = []
    out: list[str] = []
    start: int | None = None
    for char in text:
        moved.append(len(moved) - removed)
        if char == OPEN:
            removed += 1
            start = len(moved) - removed
        elif char == CLOSE:
            removed += 1
            if start is not None and len(moved) - removed > start:
                plain.append((start, len(moved) - removed))
            start = None
        else:
            out.append(char)
    moved.append(len(text) - removed)
    spans = [(moved[a], moved[b], turn) for a, b, turn in rendered.spans]
    return Rendered("".join(out), spans, [], plain_spans=plain)


def encode_plain(
    control: ControlTokens, tokenizer: Any, rendered: Rendered
) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids and character offsets of one rendering whose ``plain_spans`` must not become control tokens.

    The text is cut at the template's own control tokens (those outside every plain span) and
    each run between two of them is tokenized with the split copy of the tokenizer. The tokenizer
    cuts its input at added tokens too, so a run without a forged string comes out exactly as in
    one whole-string call; ``_AFTER_CONTROL`` before a run keeps "not at the start of the text"
    for tokenizers that put a word-boundary mark only there (sentencepiece's Metaspace).
    """
    text, plain = rendered.text, rendered.plain_spans
    whole = tokenizer(text, add_special_tokens=False, split_special_tokens=False, return_offsets_mapping=True)
    literals = [
        (token_id, (start, end))
        for token_id, (start, end) in zip(whole["input_ids"], whole["offset_mapping"], strict=True)
        if token_id in control.ids and not any(a < end and start < b for a, b in plain)
    ]
    runs: list[tuple[int, int]] = []
    position = 0
    for _, (start, end) in literals:
        runs.append((position, start))
        position = end
    runs.append((position, len(text)))
    encoded = control.split_backend.encode_batch(
        [(_AFTER_CONTROL if a else "") + text[a:b] for a, b in runs], add_special_tokens=False
    )
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    for k, ((a, b), enc) in enumerate(zip(runs, encoded, strict=True)):
        skip, shift = (1, a - len(_AFTER_CONTROL)) if a else (0, 0)
        if b > a:
            ids.extend(enc.ids[skip:])
            offsets.extend((s + shift, e + shift) for s, e in enc.offsets[skip:])
        if k < len(literals):
            ids.append(literals[k][0])
            offsets.append(literals[k][1])
    return ids, offsets
