"""Fit an encoded sample into ``cutoff_len`` tokens without losing everything it trains on.

Cutting the end off is right when enough of the reply survives (a quarter of
``cutoff_len``, or all of it when shorter). When the prompt before the first trained token
is longer than that allows, cutting the end would leave nothing (or a sliver) to learn
from, so the prompt gives way instead: its middle is cut out, keeping its
start (BOS, system prompt) and its end (the question and the assistant header), and the
reply keeps at least half of ``cutoff_len`` (or all of it, when shorter).
"""

from __future__ import annotations

from lmforge.templates.results import IGNORE_INDEX


def truncate(input_ids: list[int], labels: list[int], cutoff_len: int) -> tuple[list[int], list[int]] | None:
    """``(input_ids, labels)`` at most ``cutoff_len`` long, or ``None`` when nothing trainable fits.

    A token is "trained" when its label is not -100; the first position is never predicted
    by a causal LM, so a sample needs a trained label after position 0.
    """
    length = len(input_ids)
    if length <= cutoff_len:
        return input_ids, labels
    first = _first_trained(labels)
    if first is None:
        return None
    response_len = length - first
    min_reply = min(response_len, max(1, cutoff_len // 2))
    if first + min(response_len, max(1, cutoff_len // 4)) <= cutoff_len or first == 0:
        out_ids, out_labels = input_ids[:cutoff_len], labels[:cutoff_len]
    else:
        prompt_keep = cutoff_len - min_reply
        head = prompt_keep // 2
        tail = prompt_keep - head
        keep = list(range(head)) + list(range(first - tail, first)) + list(range(first, first + min_reply))
        out_ids = [input_ids[i] for i in keep]
        out_labels = [labels[i] for i in keep]
    if not _trains_after_first(out_labels):
        return None
    return out_ids, out_labels


def _first_trained(labels: list[int]) -> int | None:
    for i, label in enumerate(labels):
        if label != IGNORE_INDEX:
            return i
    return None


def _trains_after_first(labels: list[int]) -> bool:
    return any(label != IGNORE_INDEX for label in labels[1:])


def split_text(ids: list[int], cutoff_len: int) -> list[list[int]]:
    """Pre-training: a long document becomes consecutive ``cutoff_len`` windows, none thrown away.

    A last window of a single token has nothing to predict and is left out.
    """
    if len(ids) <= cutoff_len:
        return [ids] if len(ids) > 1 else []
    windows = [ids[i : i + cutoff_len] for i in range(0, len(ids), cutoff_len)]
    return [w for w in windows if len(w) > 1]


def fit_preference(
    prompt_len: int, answer_len: int, protected: int, cutoff_len: int
) -> tuple[int, int] | None:
    """Preference samples: ``(prompt tokens kept, answer tokens kept)`` so both fit ``cutoff_len``.

    ``answer_len`` is the longer answer's length: the prompt plus that answer must fit, so the
    two answers of a pair are compared on the same prompt. The prompt gives way first, losing
    its start, down to half of ``cutoff_len`` (or all of it, when shorter); its last
    ``protected`` tokens (the assistant header, plus a kept BOS) are never cut. Only then do
    the answers lose their ends. ``None`` when not even the protected prompt and one answer
    token fit.
    """
    if prompt_len + answer_len <= cutoff_len:
        return prompt_len, answer_len
    floor = max(protected, min(prompt_len, cutoff_len // 2))
    prompt_keep = max(cutoff_len - answer_len, floor)
    if prompt_keep >= cutoff_len:
        return None
    return prompt_keep, min(answer_len, cutoff_len - prompt_keep)
