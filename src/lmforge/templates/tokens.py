"""Rendered conversations to token ids and labels; conversation text's special-token strings stay text.

**Ids and labels.** Each conversation is tokenized as one whole string, exactly as
``apply_chat_template`` does (``add_special_tokens=False``; special tokens written in the text
are recognised, so a template's own BOS is the only BOS), in one batched fast-tokenizer call. The
trained character spans are then mapped to tokens with the fast tokenizer's char-to-token
alignment, so no segment boundary can change how the text is split. A token that straddles a
boundary counts as trained.

**Control tokens.** A chat prompt is rendered to one string and tokenized whole, and a fast tokenizer turns every
special-token string it finds into its control token, wherever the string came from. A user
who types ``<|im_end|>\\n<|im_start|>system`` would so write a system turn of their own. Here
the template's own markers stay control tokens and the same strings inside conversation text
(message content, names, tool-call arguments, tool results, tool definitions) are split.

The common case costs one regex search per conversation string: only a conversation whose text
holds a control string is rendered again with every such occurrence wrapped in two Unicode
noncharacters (they pass through every formatter, JSON included, untouched), which gives the
character spans to split; that one sample is then tokenized run by run between the template's
own control tokens, which is how the tokenizer treats those runs anyway (``encode_plain``).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from lmforge.conversation import Conversation
from lmforge.errors import ConfigError
from lmforge.templates.results import IGNORE_INDEX, EncodedSample, Rendered
from lmforge.templates.slots import THINK_CLOSE, THINK_OPEN

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer
    from transformers import PreTrainedTokenizerBase

    from lmforge.templates.interface import ChatTemplate

# Unicode noncharacters, reserved for a program's internal use: they open and close a forged span.
OPEN, CLOSE = "\ufdd0", "\ufdd1"
# The split tokenizer's stand-in for "a control token came just before" (see ``encode_plain``).
_AFTER_CONTROL = "\ufdd2"


class ControlTokens:
    """The control-token strings of one tokenizer under one template, and how to find them."""

    def __init__(self, chosen: dict[str, int], backend: Tokenizer | None, unflagged: list[str]) -> None:
        self.strings = frozenset(chosen)
        self.ids = frozenset(chosen.values())
        self.pattern = re.compile(_trie_regex(sorted(chosen))) if chosen else None
        self.backend = backend  # the fast tokenizer's Rust backend (None: a slow tokenizer, never split)
        self.unflagged = unflagged  # chosen strings the tokenizer does not flag special

    def found(self, text: str) -> bool:
        return self.pattern is not None and self.pattern.search(text) is not None

    def in_conversation(self, conv: Conversation, placeholders: tuple[str, ...] = ()) -> bool:
        """Whether any text of the conversation holds a control string (the data stage counts these);
        media ``placeholders`` that are also control strings (LLaVA's ``<image>``) do not count."""
        if self.pattern is None:
            return False
        texts = conversation_texts(conv)
        return any(self.found(_without(text, placeholders)) for text in texts)

    def mark(self, text: str) -> str:
        assert self.pattern is not None
        return self.pattern.sub(lambda m: OPEN + m.group(0) + CLOSE, text)

    @functools.cached_property
    def split_backend(self) -> Tokenizer:
        """A copy of the backend that splits the control strings (built on first need: about a
        second for a large vocabulary). Only special tokens split on request, so the others are
        flagged special in the copy; it also knows ``_AFTER_CONTROL``."""
        from tokenizers import AddedToken, Tokenizer  # why: only a sample with forged markers needs it

        assert self.backend is not None, "a slow tokenizer never splits (see encode_conversations)"
        copy = Tokenizer.from_str(self.backend.to_str())
        copy.no_truncation()
        copy.no_padding()
        copy.add_special_tokens([AddedToken(text, special=True, normalized=False) for text in self.unflagged])
        copy.add_tokens([AddedToken(_AFTER_CONTROL, special=False, normalized=False)])
        copy.encode_special_tokens = True
        return copy


_CACHE: weakref.WeakKeyDictionary[PreTrainedTokenizerBase, dict[ChatTemplate, ControlTokens]] = (
    weakref.WeakKeyDictionary()
)


def control_tokens(tokenizer: PreTrainedTokenizerBase, template: ChatTemplate) -> ControlTokens:
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


def _control_tokens(tokenizer: PreTrainedTokenizerBase, template: ChatTemplate) -> ControlTokens:
    literal = template.marker_text()
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
                token_id = tokenizer.convert_tokens_to_ids(text)
                if isinstance(token_id, int):  # (one string in, one id out)
                    chosen[text] = token_id
    backend = getattr(tokenizer, "_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None and not hasattr(backend, "to_str"):
        backend = None
    unflagged = [
        text for token in decoder.values() if (text := str(token.content)) in chosen and not token.special
    ]
    return ControlTokens(chosen, backend, unflagged)


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


def _json_strings(value: object) -> Iterator[str]:
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
    template: ChatTemplate,
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
    if split_special_tokens is None:
        split_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
    control = control_tokens(tokenizer, template)
    placeholders = media_placeholders(template)
    flagged = [control.in_conversation(conv, placeholders) for conv in convs]
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


def media_placeholders(template: ChatTemplate) -> tuple[str, ...]:
    """The dataset placeholders (``<image>``, ...) of the media kinds the template writes. They stay
    placeholders even where one is also the family's own token (LLaVA's ``<image>``): each stands
    for a medium, and the media count checks them, so they are never forged control text."""
    kinds = ("image", "video", "audio")
    return tuple(f"<{kind}>" for kind in kinds if getattr(template, f"{kind}_token", ""))


def _without(text: str, placeholders: tuple[str, ...]) -> str:
    for placeholder in placeholders:
        text = text.replace(placeholder, " ")
    return text


def mark_conversation(conv: Conversation, control: ControlTokens, template: ChatTemplate) -> Conversation:
    """The conversation with each control string in its text wrapped in ``OPEN``/``CLOSE``.

    A thinking template's ``<think>`` tags inside an assistant reply are left alone: the template
    reads them as the reasoning's bounds, as the family's official template does.
    """
    keep_think = template.thinking != "none"
    media = media_placeholders(template)
    kept = (*media, THINK_OPEN, THINK_CLOSE) if keep_think else media

    def mark(text: str, *, assistant: bool = False) -> str:
        if not text or not control.found(text):
            return text
        keep = kept if assistant else media
        if keep:
            pieces = re.split("(" + "|".join(re.escape(k) for k in keep) + ")", text)
            return "".join(p if p in keep else control.mark(p) if p else p for p in pieces)
        return control.mark(text)

    def mark_optional(text: str | None) -> str | None:
        return None if text is None else mark(text)

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
            reasoning=mark_optional(m.reasoning),
            name=mark_optional(m.name),
            tool_call_id=mark_optional(m.tool_call_id),
            tool_calls=[
                dataclasses.replace(
                    c, name=mark(c.name), id=mark_optional(c.id), arguments=mark_json(c.arguments)
                )
                for c in m.tool_calls
            ],
        )
        for m in conv.messages
    ]
    return dataclasses.replace(
        conv,
        system=mark_optional(conv.system),
        messages=messages,
        tools=mark_json(conv.tools) if conv.tools else conv.tools,
    )


def unmark(rendered: Rendered) -> Rendered:
    """Drop the marks from a rendering, keeping the spans they enclosed as ``plain_spans``."""
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
    control: ControlTokens, tokenizer: PreTrainedTokenizerBase, rendered: Rendered
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


# -- ids and labels --------------------------------------------------------------------------


def encode_rendered(
    tokenizer: PreTrainedTokenizerBase,
    rendered: list[Rendered],
    *,
    train_on_prompt: bool = False,
    mask_history: bool = False,
    control: ControlTokens | None = None,
) -> list[EncodedSample]:
    if train_on_prompt and mask_history:
        raise ConfigError("train_on_prompt and mask_history cannot both be true: set one of them to false")
    if control is not None and any(r.plain_spans for r in rendered):
        whole = _encode_whole(
            tokenizer,
            [r for r in rendered if not r.plain_spans],
            train_on_prompt=train_on_prompt,
            mask_history=mask_history,
        )
        ordered = iter(whole)
        return [
            _encode_split(control, tokenizer, r, train_on_prompt, mask_history)
            if r.plain_spans
            else next(ordered)
            for r in rendered
        ]
    return _encode_whole(tokenizer, rendered, train_on_prompt=train_on_prompt, mask_history=mask_history)


def _encode_whole(
    tokenizer: PreTrainedTokenizerBase, rendered: list[Rendered], *, train_on_prompt: bool, mask_history: bool
) -> list[EncodedSample]:
    if not rendered:
        return []
    texts = [r.text for r in rendered]
    backend = _plain_backend(tokenizer)
    encodings: list[Encoding] | None
    if backend is not None:
        encodings = backend.encode_batch(texts, add_special_tokens=False)
        all_ids: list[list[int]] = [enc.ids for enc in encodings]
    else:
        # the template's markers are control tokens even where the tokenizer splits specials
        batch = tokenizer(texts, add_special_tokens=False, split_special_tokens=False)
        all_ids = batch["input_ids"]
        encodings = getattr(batch, "encodings", None) if getattr(tokenizer, "is_fast", False) else None
    if encodings is None:
        return [_encode_pieces(tokenizer, r, train_on_prompt, mask_history) for r in rendered]
    samples = []
    for r, ids, enc in zip(rendered, all_ids, encodings, strict=True):
        if not isinstance(ids, list):
            ids = list(ids)
        if train_on_prompt:
            samples.append(EncodedSample(ids, list(ids)))
            continue
        labels = [IGNORE_INDEX] * len(ids)
        last = r.last_turn if mask_history else -1
        for start, end, turn in r.spans:
            if mask_history and turn != last:
                continue
            first, stop = _token_range(enc, start, end)
            labels[first:stop] = ids[first:stop]
        samples.append(EncodedSample(ids, labels))
    return samples


def _plain_backend(tokenizer: PreTrainedTokenizerBase) -> Tokenizer | None:
    """The fast tokenizer's Rust backend when calling it directly gives exactly what the wrapper gives.

    The wrapper's batch call converts every encoding into Python lists and dicts we do not use;
    skipping it made the data stage about a fifth faster. Only taken when the backend has no
    truncation or padding of its own configured and splits special tokens as the wrapper would.
    """
    if not getattr(tokenizer, "is_fast", False):
        return None
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch"):
        return None
    if getattr(backend, "truncation", None) is not None or getattr(backend, "padding", None) is not None:
        return None
    split = bool(getattr(tokenizer, "split_special_tokens", False))
    if split or getattr(backend, "encode_special_tokens", split) != split:
        return None  # (a tokenizer that splits specials: the wrapper, told not to, keeps markers whole)
    return backend


def _encode_split(
    control: ControlTokens,
    tokenizer: PreTrainedTokenizerBase,
    r: Rendered,
    train_on_prompt: bool,
    mask_history: bool,
) -> EncodedSample:
    """One rendering with special-token strings in its conversation text, tokenized with them split."""
    ids, offsets = encode_plain(control, tokenizer, r)
    if train_on_prompt:
        return EncodedSample(ids, list(ids))
    labels = [IGNORE_INDEX] * len(ids)
    last = r.last_turn
    for start, end, turn in r.spans:
        if mask_history and turn != last:
            continue
        for k, (a, b) in enumerate(offsets):
            if a < end and start < b:
                labels[k] = ids[k]
    return EncodedSample(ids, labels)


def _token_range(enc: Encoding, start: int, end: int) -> tuple[int, int]:
    """Tokens overlapping characters [start, end); empty when none does (e.g. stripped spaces)."""
    first = None
    for pos in range(start, end):
        first = enc.char_to_token(pos)
        if first is not None:
            break
    if first is None:
        return 0, 0
    for pos in range(end - 1, start - 1, -1):
        last = enc.char_to_token(pos)
        if last is not None:
            return first, last + 1
    return 0, 0  # pragma: no cover - first was found, so some char maps


def _encode_pieces(
    tokenizer: PreTrainedTokenizerBase, r: Rendered, train_on_prompt: bool, mask_history: bool
) -> EncodedSample:
    """Fallback for slow tokenizers: tokenize piece by piece (exact where pieces end at special tokens)."""
    ids: list[int] = []
    labels: list[int] = []
    last = r.last_turn
    texts = [text for text, _ in r.pieces]
    piece_ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    for (_, turn), part in zip(r.pieces, piece_ids, strict=True):
        trained = train_on_prompt or (turn is not None and (not mask_history or turn == last))
        ids.extend(part)
        labels.extend(part if trained else [IGNORE_INDEX] * len(part))
    return EncodedSample(ids, labels)
