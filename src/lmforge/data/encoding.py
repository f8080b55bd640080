"""Step 3 of a sample's path: Conversations -> ids and labels, a chunk at a time, into flat arrays.

One chunk is converted, checked for its stage (:func:`sft_view`, :func:`pt_text`), encoded with
one ``Template.encode_batch`` call (one fast-tokenizer call over the chunk) and truncated to
``cutoff_len`` (:func:`truncate`). The result is kept as flat int32 arrays plus lengths, which
become an arrow list column without a Python-level copy per token. Records that cannot be
trained on are counted by reason in the :class:`DatasetReport` (or stop the run under ``strict``).

What each stage needs from a Conversation: SFT needs turns in order (user, then assistant, with
tool results only after a tool call), nothing empty, and an assistant reply at the end.
Preference data (``chosen``/``rejected``) is trained on its chosen reply under SFT; KTO records
tagged ``false`` (undesirable replies) are dropped from SFT. Pre-training takes the text of the
messages. Preference stages split a record into its prompt and its answer(s), each prompt +
answer checked as SFT checks a sample.

Truncation cuts the end off when enough of the reply survives (a quarter of ``cutoff_len``, or
all of it when shorter). When the prompt before the first trained token is longer than that
allows, the prompt gives way instead: its middle is cut out, keeping its start (BOS, system
prompt) and its end (the question and the assistant header), and the reply keeps at least half
of ``cutoff_len`` (or all of it, when shorter).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lmforge.conversation import Conversation, role_order_error
from lmforge.data.records import BadRecord, Converter
from lmforge.errors import ConfigError, DataError
from lmforge.media.samples import MediaDrop, expand_sample, media_refs, placeholder_counts
from lmforge.templates.results import IGNORE_INDEX

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from lmforge.media.inputs import MediaProcessing
    from lmforge.templates import ChatTemplate


# ---------------------------------------------------------------- what a stage trains on


def sft_view(conv: Conversation) -> Conversation:
    """The conversation SFT trains on; :class:`BadRecord` when there is none."""
    if conv.kto_tag is False:
        raise BadRecord("undesirable reply (kto_tag false)", "SFT trains only on replies tagged true")
    messages = conv.messages
    if conv.chosen is not None and (not messages or messages[-1].role != "assistant"):
        conv = dataclasses.replace(conv, messages=[*messages, conv.chosen])
        messages = conv.messages
    if not messages:
        raise BadRecord("no assistant reply", "the sample has no messages")
    bad = role_order_error(messages, users_alternate=True)
    for index, message in enumerate(messages if bad is None else messages[: bad[0]]):
        if not message.content.strip() and not message.tool_calls:
            raise BadRecord("empty content", f"message {index} ({message.role}) is empty")
    if bad is not None:
        index = bad[0]
        previous = messages[index - 1].role if index else "nothing"
        raise BadRecord("roles out of order", f"message {index} ({messages[index].role}) follows {previous}")
    if messages[-1].role != "assistant":
        raise BadRecord("no assistant reply", f"the last message is a {messages[-1].role} turn")
    return conv


def pt_text(conv: Conversation) -> str:
    """Pre-training text: the messages' contents, one per line (one column for ``columns: {prompt: text}``)."""
    text = "\n".join(m.content for m in conv.messages if m.content)
    if not text.strip():
        raise BadRecord("empty text", "the sample has no text")
    return text


def pair_views(conv: Conversation) -> tuple[Conversation, Conversation, Conversation]:
    """``(prompt, prompt + chosen, prompt + rejected)`` of a preference pair; BadRecord when it is none."""
    if conv.chosen is None or conv.rejected is None:
        missing = "chosen" if conv.chosen is None else "rejected"
        raise BadRecord("no chosen or rejected reply", f"the record has no {missing} reply")
    prompt = _prompt_of(conv, conv.messages)
    if prompt.messages and prompt.messages[-1].role == "assistant":
        raise BadRecord("prompt ends with a reply", "a preference prompt ends with a user or tool turn")
    chosen = sft_view(dataclasses.replace(prompt, messages=[*prompt.messages, conv.chosen]))
    rejected = sft_view(dataclasses.replace(prompt, messages=[*prompt.messages, conv.rejected]))
    return prompt, chosen, rejected


def kto_views(conv: Conversation) -> list[tuple[Conversation, Conversation, bool]]:
    """``(prompt, prompt + answer, desirable)`` samples of a KTO record.

    A record without ``kto_tag`` is desirable (as LLaMA-Factory reads it); a preference pair
    gives two samples, its chosen reply desirable and its rejected one not.
    """
    if conv.chosen is not None or conv.rejected is not None:
        prompt, chosen, rejected = pair_views(conv)
        return [(prompt, chosen, True), (prompt, rejected, False)]
    whole = sft_view(_prompt_of(conv, conv.messages))
    return [(_prompt_of(conv, whole.messages[:-1]), whole, conv.kto_tag is not False)]


def _prompt_of(conv: Conversation, messages: list) -> Conversation:
    return dataclasses.replace(conv, messages=list(messages), chosen=None, rejected=None, kto_tag=None)


# ---------------------------------------------------------------- encoding a chunk


@dataclass(frozen=True)
class EncodeSettings:
    """Everything besides the data, tokenizer and template that changes the encoded result."""

    stage: str = "sft"
    cutoff_len: int = 2048
    train_on_prompt: bool = False
    mask_history: bool = False
    enable_thinking: bool = True
    strict: bool = False


@dataclass
class ChunkOutput:
    """Encoded samples of one chunk as flat arrays, and what was dropped on the way."""

    ids: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    truncated: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    first_dropped: dict[str, str] = field(default_factory=dict)
    media: list[list[str]] | None = None  # per sample, its ``kind:path`` media (multimodal models only)
    # per sample: its text holds a special-token string of the tokenizer (usually a scraping accident)
    special_text: list[bool] = field(default_factory=list)
    first_special_text: str = ""


def _flatten(lists: list[list[int]], total: int) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int32, count=total)


def _into_arrays(ids: list[list[int]], labels: list[list[int]], out: ChunkOutput) -> ChunkOutput:
    """Store the samples in ``out`` as flat arrays plus lengths (one arrow list column each, later)."""
    lengths = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
    total = int(lengths.sum())
    out.ids = _flatten(ids, total)
    out.labels = _flatten(labels, total)
    out.lengths = lengths
    return out


def encode_chunk(
    rows: list[dict[str, Any]],
    indices: list[int] | range,
    *,
    convert: Converter,
    template: ChatTemplate | None,
    tokenizer: PreTrainedTokenizerBase,
    settings: EncodeSettings,
    locate: Callable[[int], str],
    dataset: str,
    media: MediaProcessing | None = None,
) -> ChunkOutput:
    """Encode one chunk of rows; ``indices`` are their record indices (for drop messages).

    With ``media`` (a multimodal model's processing) each sample's media placeholders are
    expanded to the model's token counts and its media references are kept (``out.media``).
    """
    out = ChunkOutput(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.int32))
    kept: list[Any] = []
    kept_index: list[int] = []
    sft = settings.stage == "sft"
    for index, row in zip(indices, rows, strict=True):
        try:
            conv = convert(row)
            kept.append(sft_view(conv) if sft else pt_text(conv))
            kept_index.append(index)
        except BadRecord as bad:
            drop_record(out, bad.reason, bad.detail, index, locate, dataset, settings.strict)
    if not kept:
        return out
    if sft:
        encoded = required_template(template, settings.stage).encode_batch(
            tokenizer,
            kept,
            train_on_prompt=settings.train_on_prompt,
            mask_history=settings.mask_history,
            enable_thinking=settings.enable_thinking,
        )
        all_ids: list[list[int]] = []
        all_labels: list[list[int]] = []
        all_index: list[int] = []
        all_media: list[list[str]] = []
        all_special: list[bool] = []
        cutoff = settings.cutoff_len
        for sample, index, conv in zip(encoded, kept_index, kept, strict=True):
            ids, labels = sample.input_ids, sample.labels
            refs: list[str] = []
            if media is not None:
                try:
                    refs = media_refs(conv)
                    if refs:
                        ids, labels = expand_sample(list(ids), list(labels), refs, media)
                except MediaDrop as drop:
                    drop_record(out, drop.reason, drop.detail, index, locate, dataset, settings.strict)
                    continue
            if len(ids) > cutoff:
                fitted = truncate(ids, labels, cutoff)
                if fitted is None:
                    detail = f"no trained token within cutoff_len {cutoff}"
                    drop_record(out, "nothing to train on", detail, index, locate, dataset, settings.strict)
                    continue
                if (
                    refs
                    and media is not None
                    and placeholder_counts(fitted[0], media) != placeholder_counts(ids, media)
                ):
                    detail = f"{len(ids)} tokens with its media; raise cutoff_len or lower image_max_pixels"
                    drop_record(
                        out, "media cut by cutoff_len", detail, index, locate, dataset, settings.strict
                    )
                    continue
                ids, labels = fitted
                out.truncated += 1
            all_ids.append(ids)
            all_labels.append(labels)
            all_index.append(index)
            all_media.append(refs)
            all_special.append(sample.special_text)
        _into_arrays(all_ids, all_labels, out)
        if media is not None:
            out.media = all_media
        untrained = _untrained(out.labels, out.lengths)
        if untrained.any():  # rare: a sample whose template trains nothing (checked on the flat arrays)
            for position in np.flatnonzero(untrained).tolist():
                detail = "no token of the sample is trained"
                drop_record(
                    out, "nothing to train on", detail, all_index[position], locate, dataset, settings.strict
                )
            keep_tokens = np.repeat(~untrained, out.lengths)
            out.ids, out.labels = out.ids[keep_tokens], out.labels[keep_tokens]
            out.lengths = out.lengths[~untrained]
            all_index = [i for i, gone in zip(all_index, untrained.tolist(), strict=True) if not gone]
            all_special = [f for f, gone in zip(all_special, untrained.tolist(), strict=True) if not gone]
            if out.media is not None:
                out.media = [
                    refs for refs, gone in zip(out.media, untrained.tolist(), strict=True) if not gone
                ]
        out.special_text = all_special
        if any(all_special):
            out.first_special_text = locate(all_index[all_special.index(True)])
        return out
    return _encode_pretraining(kept, tokenizer, settings, out)


def required_template(template: ChatTemplate | None, stage: str) -> ChatTemplate:
    """``template``; every stage but pt encodes chats and stops without one."""
    if template is None:
        raise ConfigError(
            f"config key 'template' is required for stage {stage} (`lmforge template list` shows them)"
        )
    return template


def _untrained(labels: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per sample: True when no label after its first position is trained (a causal LM learns nothing)."""
    if not len(lengths):
        return np.zeros(0, dtype=bool)
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    trained = labels != IGNORE_INDEX
    trained[starts[lengths > 0]] = False
    counts = np.add.reduceat(trained.astype(np.int32), np.minimum(starts, max(len(trained) - 1, 0)))
    counts[lengths == 0] = 0
    return counts == 0


def _encode_pretraining(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, settings: EncodeSettings, out: ChunkOutput
) -> ChunkOutput:
    """Pre-training: each text with the tokenizer's own special tokens plus EOS, every token trained."""
    eos = tokenizer.eos_token_id
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    windows: list[list[int]] = []
    for ids in encoded:
        if eos is not None and (not ids or ids[-1] != eos):
            ids = [*ids, eos]
        if len(ids) > settings.cutoff_len:
            out.truncated += 1
        parts = split_text(ids, settings.cutoff_len)
        windows.extend(parts)
    return _into_arrays(windows, windows, out)


def drop_record(
    out: ChunkOutput,
    reason: str,
    detail: str,
    index: int,
    locate: Callable[[int], str],
    dataset: str,
    strict: bool,
) -> None:
    if strict:
        raise DataError(
            f"dataset '{dataset}': {locate(index)}: {reason} ({detail}); fix the record, or set strict: false "
            "to drop such records and count them"
        )
    out.dropped[reason] += 1
    if reason not in out.first_dropped:
        out.first_dropped[reason] = f"{locate(index)}: {detail}" if detail else locate(index)


# ---------------------------------------------------------------- truncation


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


# ---------------------------------------------------------------- what happened


@dataclass
class DatasetReport:
    """One dataset's counts. ``records`` were selected from the file(s); ``samples`` came out encoded.

    ``dropped`` maps a reason to how many records it removed; ``first_dropped`` names the first
    such record per reason (file and index) so the user can look at it. ``truncated`` counts
    samples cut to ``cutoff_len`` (pre-training: documents split into several windows).
    """

    name: str
    split: str = "train"  # train or eval: which list the dataset was given in
    files: list[str] = field(default_factory=list)
    records: int = 0
    samples: int = 0
    truncated: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    first_dropped: dict[str, str] = field(default_factory=dict)
    cached: bool = False
    # preference stages: samples are pairs (dpo, rm) or KTO samples, ``desirable`` of them tagged true
    stage: str = "sft"
    desirable: int = 0
    # Samples whose text holds a special-token string (split only with split_special_tokens: true).
    special_text: int = 0
    first_special_text: str = ""

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def add_drop(self, reason: str, where: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.first_dropped.setdefault(reason, where)

    def merge_drops(self, counts: Counter[str] | dict[str, int], first: dict[str, str]) -> None:
        for reason, n in counts.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        for reason, where in first.items():
            self.first_dropped.setdefault(reason, where)

    def add_special_text(self, count: int, first: str) -> None:
        self.special_text += count
        self.first_special_text = self.first_special_text or first

    def summary(self) -> str:
        unit = "pairs" if self.stage in ("dpo", "rm") else "samples"
        kto = f" ({self.desirable} desirable)" if self.stage == "kto" else ""
        line = (
            f"{self.split} dataset '{self.name}': {self.samples} {unit}{kto} from {self.records} records, "
            f"{self.tokens} tokens ({self.trained_tokens} trained), {self.truncated} truncated"
        )
        if self.dropped:
            reasons = ", ".join(
                f"{n} {reason}" for reason, n in sorted(self.dropped.items(), key=lambda x: -x[1])
            )
            line += f", {self.dropped_total} dropped ({reasons})"
        if self.special_text:
            line += f", {self.special_text} with special-token text (first: {self.first_special_text})"
        return line

    def drop_details(self) -> list[str]:
        return [f"first '{reason}' record: {where}" for reason, where in self.first_dropped.items()]


@dataclass
class DataReport:
    """Per-dataset reports, plus the sizes of the final train and eval sets after mixing and splitting."""

    datasets: list[DatasetReport] = field(default_factory=list)
    train_samples: int | None = None
    eval_samples: int | None = None
    streaming: bool = False

    def for_split(self, split: str) -> list[DatasetReport]:
        return [d for d in self.datasets if d.split == split]

    @property
    def dropped(self) -> dict[str, dict[str, int]]:
        return {d.name: dict(d.dropped) for d in self.datasets if d.dropped}

    @property
    def truncated(self) -> int:
        return sum(d.truncated for d in self.datasets)

    @property
    def samples(self) -> int:
        return sum(d.samples for d in self.datasets)

    def lines(self) -> list[str]:
        if self.streaming:
            return [
                f"streaming {d.split} dataset '{d.name}' (counts are not known ahead)" for d in self.datasets
            ]
        out = [d.summary() for d in self.datasets]
        if self.train_samples is not None:
            out.append(f"train set: {self.train_samples} samples; eval set: {self.eval_samples or 0} samples")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataReport:
        reports = [DatasetReport(**d) for d in data.get("datasets", [])]
        return cls(
            datasets=reports,
            train_samples=data.get("train_samples"),
            eval_samples=data.get("eval_samples"),
            streaming=data.get("streaming", False),
        )


@dataclass
class DatasetBundle:
    """The encoded train and eval sets (``input_ids``, ``labels``) and what happened on the way."""

    train: datasets.Dataset | datasets.IterableDataset | None
    eval: datasets.Dataset | datasets.IterableDataset | None
    report: DataReport
