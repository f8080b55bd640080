"""What a template returns: encoded token ids with their labels, and a parsed reply.

Labels are made here, by :meth:`Template.encode`, so :data:`IGNORE_INDEX` (the label of a
token that is not trained, the value PyTorch's cross-entropy skips) is defined here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmforge.conversation import ToolCall

IGNORE_INDEX = -100


@dataclass
class EncodedSample:
    """Token ids and labels of one conversation; labels are :data:`IGNORE_INDEX` where nothing is trained."""

    input_ids: list[int]
    labels: list[int]
    # The conversation's own text holds a special-token string (split when asked; see .plaintext).
    special_text: bool = False


@dataclass
class ParsedResponse:
    """A generated reply split into its parts: visible text, thinking text and tool calls."""

    content: str
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
