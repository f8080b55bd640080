"""Media of training samples: placeholder expansion at encoding time, model inputs at batch time.

A multimodal sample is encoded by the same template as a text one; its media placeholders
(``<image>`` in the data, the template's image token in the ids) are then repeated once per
feature of the medium, using the model's own processor to count them, exactly as the server
does (``media/inputs.py``). The encoded sample keeps its media references (``kind:path``)
and the collator turns them into pixel or audio features for each batch. Counting reads each
file once while encoding (cached with the dataset); a sample whose media cannot be read, does
not match its placeholders, or would be cut by ``cutoff_len`` is dropped and counted (or stops
the run under ``strict``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.media.inputs import SECONDS_PER_GRID, MediaInputError, MediaInputs, MediaProcessing

if TYPE_CHECKING:  # torch and the processors load only when a multimodal model trains
    import torch

    from lmforge.conversation import Conversation

MEDIA_COLUMN = "media"
KINDS = (("images", "image"), ("videos", "video"), ("audios", "audio"))


class MediaDrop(Exception):
    """A sample whose media cannot be used: ``reason`` and ``detail`` as for any dropped record."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def media_refs(conv: Conversation) -> list[str]:
    """``kind:path`` for each medium of a conversation, images then videos then audios."""
    refs = []
    for attr, kind in KINDS:
        for item in getattr(conv, attr, None) or []:
            if not isinstance(item, str):
                raise MediaDrop(
                    "unreadable media", f"a {kind} entry is not a file path ({type(item).__name__})"
                )
            refs.append(f"{kind}:{item}")
    return refs


def load_media(refs: list[str], media: MediaProcessing) -> MediaInputs:
    """Read and process ``kind:path`` references with the model's processing."""
    kinds, blobs, names = [], [], []
    for ref in refs:
        kind, _, path = ref.partition(":")
        if kind not in media.kinds:
            raise MediaDrop(
                "media the model does not take", f"{kind} input for a model that takes {sorted(media.kinds)}"
            )
        try:
            blobs.append(Path(path).read_bytes())
        except OSError as exc:
            raise MediaDrop("unreadable media", f"{path}: {exc.strerror or exc}") from None
        kinds.append(kind)
        names.append(path)
    try:
        return media.process(blobs, names, kinds)
    except MediaInputError as exc:
        raise MediaDrop("unreadable media", str(exc)) from None


def expand_sample(
    ids: list[int], labels: list[int], refs: list[str], media: MediaProcessing
) -> tuple[list[int], list[int]]:
    """``ids`` and ``labels`` with each placeholder repeated once per feature of its medium (or
    replaced by its token run, whose labels are ignored)."""
    inputs = load_media(refs, media)
    try:
        return media.expand_labeled(ids, labels, inputs)
    except MediaInputError as exc:
        raise MediaDrop("media placeholders do not match", str(exc)) from None


def placeholder_counts(ids: list[int], media: MediaProcessing) -> Counter[int]:
    placeholders = set(media.placeholders.values())
    return Counter(token for token in ids if token in placeholders)


def batch_media(
    refs_per_row: list[list[str]], input_ids: torch.Tensor, media: MediaProcessing
) -> dict[str, Any]:
    """Model inputs for a batch's media (rows in order), plus M-RoPE token types where the model needs them."""
    if not any(refs_per_row):
        return {}
    try:
        rows = [load_media(refs, media) if refs else None for refs in refs_per_row]
    except MediaDrop as exc:  # the file changed since encoding
        raise ValueError(f"cannot load the media of a training batch: {exc.detail}") from None
    out: dict[str, Any] = {
        k: v
        for k, v in media.batch_inputs(rows, input_ids).items()
        if k != SECONDS_PER_GRID or media.time_positions
    }
    out.update(media.training_extras(input_ids))
    return out
