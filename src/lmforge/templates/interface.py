"""What every chat template offers its callers: :class:`ChatTemplate`.

Two kinds implement it: the declarative :class:`~lmforge.templates.template.Template` (every
registered name) and :class:`~lmforge.templates.auto.JinjaTemplate` (``template: auto``, the
tokenizer's own jinja). Data, training, serving and prediction take a ``ChatTemplate`` and never
ask which kind it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lmforge.conversation import Conversation
    from lmforge.templates.results import EncodedSample, ParsedResponse
    from lmforge.templates.slots import ThinkingStyle


class ChatTemplate(ABC):
    """A chat format: conversations to ids and labels, a prompt's text, a reply back into parts."""

    name: str
    # Strings that end a reply (matched as single tokens where the vocabulary has them).
    stop_words: tuple[str, ...]
    # How the format writes thinking blocks ("none": it has no thinking of its own).
    thinking: ThinkingStyle

    def encode(
        self,
        tokenizer: PreTrainedTokenizerBase,
        conv: Conversation,
        *,
        add_generation_prompt: bool = False,
        train_on_prompt: bool = False,
        mask_history: bool = False,
        enable_thinking: bool = True,
        split_special_tokens: bool | None = None,
    ) -> EncodedSample:
        """Token ids and labels of one conversation (see :meth:`encode_batch`)."""
        return self.encode_batch(
            tokenizer,
            [conv],
            add_generation_prompt=add_generation_prompt,
            train_on_prompt=train_on_prompt,
            mask_history=mask_history,
            enable_thinking=enable_thinking,
            split_special_tokens=split_special_tokens,
        )[0]

    @abstractmethod
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
        """Token ids and labels of many conversations, with one fast-tokenizer call over their texts.

        With ``split_special_tokens`` (None: the tokenizer's own setting, as LLaMA-Factory loads
        it; serving always passes True) special-token strings inside the conversations' text are
        plain text, while the template's own markers stay control tokens (see :mod:`.tokens`).
        """

    @abstractmethod
    def render_text(
        self,
        tokenizer: PreTrainedTokenizerBase,
        conv: Conversation,
        *,
        add_generation_prompt: bool = False,
        enable_thinking: bool = True,
    ) -> str:
        """The conversation as one string, exactly what :meth:`encode` tokenizes."""

    @abstractmethod
    def parse_response(self, text: str) -> ParsedResponse:
        """Split generated text into content, thinking and tool calls (for serving)."""

    @abstractmethod
    def jinja_chat_template(self) -> str:
        """A jinja ``chat_template`` that renders like this template (saved with the tokenizer)."""

    @abstractmethod
    def marker_text(self) -> str:
        """Every string the template writes by itself, so that the same strings inside conversation
        text can be told apart from its own markers (see :func:`.tokens.control_tokens`)."""
