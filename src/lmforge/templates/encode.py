"""Turn rendered conversations into ids and labels with one batched fast-tokenizer call.

Each conversation is tokenized as one whole string, exactly as ``apply_chat_template``
does (``add_special_tokens=False``; special tokens written in the text are recognised, so
a template's own BOS is the only BOS). The trained character spans are then mapped to
tokens with the fast tokenizer's char-to-token alignment, so no segment boundary can
change how the text is split. A token that straddles a boundary counts as trained.

A rendering with ``plain_spans`` (conversation text holding special-token strings, see
:mod:`.plaintext`) is tokenized on its own, with those strings split; the rest stay in the batch.
"""

from __future__ import annotations

from typing import Any

from lmforge.errors import ConfigError
from lmforge.templates.plaintext import ControlTokens, encode_plain
from lmforge.templates.render import Rendered
from lmforge.templates.results import IGNORE_INDEX, EncodedSample


def encode_rendered(
    tokenizer: Any,
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
    tokenizer: Any, rendered: list[Rendered], *, train_on_prompt: bool, mask_history: bool
) -> list[EncodedSample]:
    if not rendered:
        return []
    texts = [r.text for r in rendered]
    backend = _plain_backend(tokenizer)
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


def _plain_backend(tokenizer: Any) -> Any:
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
    control: ControlTokens, tokenizer: Any, r: Rendered, train_on_prompt: bool, mask_history: bool
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


def _token_range(enc: Any, start: int, end: int) -> tuple[int, int]:
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


def _encode_pieces(tokenizer: Any, r: Rendered, train_on_prompt: bool, mask_history: bool) -> EncodedSample:
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
