"""The declarative chat template: :class:`Template`, its slots (:mod:`.slots`) plus what it does.

A training sample's way through this package is three files: :meth:`Template.encode_batch`
here, :func:`.render.render` (the text, its thinking blocks and tool texts, with the trained
character spans) and :func:`.tokens.encode_conversations` (ids and labels, with conversation
text's special-token strings kept plain). Serving adds :mod:`.parse` for the reply; export adds
:mod:`.jinja` for the tokenizer's ``chat_template``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from lmforge.templates.interface import ChatTemplate
from lmforge.templates.jinja import to_jinja
from lmforge.templates.parse import parse_reply
from lmforge.templates.render import TOOL_TEXTS, render, special_strings, tool_marker_texts
from lmforge.templates.slots import THINK_CLOSE, THINK_OPEN, TemplateSlots
from lmforge.templates.tokens import encode_conversations

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lmforge.conversation import Conversation
    from lmforge.templates.results import EncodedSample, ParsedResponse


@dataclasses.dataclass(frozen=True)
class Template(TemplateSlots, ChatTemplate):
    """One registered chat format: its slots, and encoding, rendering and parsing by them."""

    def encode_batch(
        self,
        tokenizer: PreTrainedTokenizerBase,
        convs: list[Conversation],
        *,
        add_generation_prompt: bool = False,
        train_on_prompt: bool = False,
        mask_history: bool = False,
        enable_thinking: bool = True,
        split_special_tokens: bool | None = None,
    ) -> list[EncodedSample]:
        specials = special_strings(tokenizer)
        return encode_conversations(
            self,
            tokenizer,
            convs,
            lambda conv: render(
                self,
                conv,
                tokenizer,
                add_generation_prompt=add_generation_prompt,
                enable_thinking=enable_thinking,
                specials=specials,
            ),
            split_special_tokens=split_special_tokens,
            train_on_prompt=train_on_prompt,
            mask_history=mask_history,
        )

    def render_text(
        self,
        tokenizer: PreTrainedTokenizerBase,
        conv: Conversation,
        *,
        add_generation_prompt: bool = False,
        enable_thinking: bool = True,
    ) -> str:
        return render(
            self,
            conv,
            tokenizer,
            add_generation_prompt=add_generation_prompt,
            enable_thinking=enable_thinking,
        ).text

    def parse_response(self, text: str) -> ParsedResponse:
        """Split generated text into content, thinking and tool calls (for serving), in this
        template's own tool format."""
        return parse_reply(text, stop_words=self.stop_words, tool_format=self.tool_format)

    def jinja_chat_template(self) -> str:
        return to_jinja(self)

    def marker_text(self) -> str:
        """Every string the template writes by itself: its slots, and its tool format around dummy values."""
        parts = [value for value in dataclasses.asdict(self).values() if isinstance(value, str)]
        parts += list(self.stop_words)
        if self.thinking != "none":
            parts += [THINK_OPEN, THINK_CLOSE]
        parts += tool_marker_texts(TOOL_TEXTS[self.tool_format])
        return "\n".join(parts)
