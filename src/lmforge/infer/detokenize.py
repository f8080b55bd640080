"""Turn a growing list of token ids into text deltas, honouring stop strings.

Decoding token by token breaks multi-byte characters and words that span tokens, so the
whole output is decoded each step and only the new suffix is emitted; a trailing
replacement character (half of a UTF-8 sequence) is held back until it completes. Text that
could be the start of a stop string is held back too, so a stop string never leaks out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class IncrementalText:
    """Per-choice decoder. ``push(token_id)`` returns ``(delta, stopped)``."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, stop: list[str], *, skip_special_tokens: bool = True
    ) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.emitted = 0  # characters of the decoded text already returned
        self.text = ""

    def push(self, token_id: int) -> tuple[str, bool]:
        self.ids.append(token_id)
        # one sequence of ids decodes to one string (the stubs also allow a batch's list)
        self.text = str(self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special_tokens))
        for stop in self.stop:
            at = self.text.find(stop, max(0, self.emitted - len(stop) + 1))
            if at != -1:
                delta = self.text[self.emitted : at] if at > self.emitted else ""
                self.emitted = max(self.emitted, at)
                self.text = self.text[:at]
                return delta, True
        safe = len(self.text)
        if self.text.endswith("\ufffd"):
            safe -= 1
        safe = min(safe, len(self.text) - self._held_for_stop())
        if safe <= self.emitted:
            return "", False
        delta = self.text[self.emitted : safe]
        self.emitted = safe
        return delta, False

    def flush(self) -> str:
        """Whatever was held back, once the choice has ended without a stop string."""
        delta = self.text[self.emitted :]
        self.emitted = len(self.text)
        return delta

    def _held_for_stop(self) -> int:
        """Length of the longest text suffix that is a proper prefix of some stop string."""
        held = 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(self.text)), held, -1):
                if self.text.endswith(stop[:n]):
                    held = n
                    break
        return held
