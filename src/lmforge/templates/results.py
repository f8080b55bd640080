"""What a template returns: a rendering with its trained spans, encoded ids with labels, a parsed reply.

Labels are made by :meth:`Template.encode` (see :mod:`.tokens`), so :data:`IGNORE_INDEX` (the
label of a token that is not trained, the value PyTorch's cross-entropy skips) is defined here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmforge.conversation import ToolCall

IGNORE_INDEX = -100


@dataclass
class Rendered:
    """A conversation's text, and (start, end, assistant_turn) spans of the trained parts.

    ``pieces`` are the text in order, each tagged with its assistant turn (None: not trained),
    for tokenizers without character offsets. ``plain_spans`` are the character spans of
    conversation text that hold special-token strings to be tokenized as plain text (found by
    :mod:`.tokens`; empty nearly always).
    """

    text: str
    spans: list[tuple[int, int, int]] = field(default_factory=list)
    pieces: list[tuple[str, int | None]] = field(default_factory=list)
    plain_spans: list[tuple[int, int]] = field(default_factory=list)

    @property
    def last_turn(self) -> int:
        return max((t for _, _, t in self.spans), default=-1)


@dataclass
class EncodedSample:
    """Token ids and labels of one conversation; labels are :data:`IGNORE_INDEX` where nothing is trained."""

    input_ids: list[int]
    labels: list[int]
    # The conversation's own text holds a special-token string (split when asked; see .tokens).
    special_text: bool = False


@dataclass
class ParsedResponse:
    """A generated reply split into its parts: visible text, thinking text and tool calls."""

    content: str
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
