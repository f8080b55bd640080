"""Conversation -> prompt ids, through the same ``Template.encode`` that training uses.

The server and the terminal chat both build prompts here, so a served model sees exactly
the format it was fine-tuned on; only the generation prompt is added at the end.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from lmforge.infer.engine import SamplingOptions

if TYPE_CHECKING:
    from lmforge.config import Config, GeneratingArguments
    from lmforge.conversation import Conversation
    from lmforge.templates.interface import ChatTemplate
    from lmforge.templates.results import ParsedResponse


class PromptBuilder:
    """The chat template of a served model, with the config's system prompt and thinking switch."""

    def __init__(
        self,
        tokenizer: Any,
        template: ChatTemplate,
        *,
        default_system: str | None = None,
        enable_thinking: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.default_system = default_system
        self.enable_thinking = enable_thinking

    @classmethod
    def from_config(cls, config: Config, tokenizer: Any) -> PromptBuilder:
        from lmforge.templates import resolve_template

        thinking = config.data.enable_thinking
        return cls(
            tokenizer,
            resolve_template(config.data.template, tokenizer),
            default_system=config.generating.default_system,
            enable_thinking=True if thinking is None else bool(thinking),
        )

    def _with_default_system(self, conv: Conversation) -> Conversation:
        if conv.system is None and self.default_system is not None:
            return dataclasses.replace(conv, system=self.default_system)
        return conv

    def encode(self, conv: Conversation, *, enable_thinking: bool | None = None) -> list[int]:
        """Prompt ids ending with the assistant's generation prompt.

        Special-token strings in the conversation's text are plain text, whatever the tokenizer's
        ``split_special_tokens``: a client cannot write control tokens (a system turn of its own).
        """
        thinking = self.enable_thinking if enable_thinking is None else enable_thinking
        encoded = self.template.encode(
            self.tokenizer,
            self._with_default_system(conv),
            add_generation_prompt=True,
            enable_thinking=thinking,
            split_special_tokens=True,
        )
        return list(encoded.input_ids)

    def tool_call_opening(
        self, conv: Conversation, function: str | None, *, enable_thinking: bool | None = None
    ) -> str | None:
        """The reply's opening that makes it a call of ``function`` (any tool when None); None
        when this template writes no tool calls (see :mod:`lmforge.templates.forcing`)."""
        from lmforge.templates.forcing import forced_tool_call_prefix

        thinking = self.enable_thinking if enable_thinking is None else enable_thinking
        return forced_tool_call_prefix(
            self.template, self.tokenizer, self._with_default_system(conv), function, enable_thinking=thinking
        )

    def opening_ids(self, opening: str, function: str | None) -> list[int]:
        """Ids of a forced tool-call opening; the function name a client chose stays plain text."""
        from lmforge.templates.results import Rendered
        from lmforge.templates.tokens import control_tokens, encode_plain

        control = control_tokens(self.tokenizer, self.template)
        at = opening.rfind(function) if function else -1
        if function and at >= 0 and control.backend is not None and control.found(function):
            return encode_plain(
                control, self.tokenizer, Rendered(opening, plain_spans=[(at, at + len(function))])
            )[0]
        return list(self.tokenizer(opening, add_special_tokens=False)["input_ids"])

    @property
    def stop_words(self) -> list[str]:
        return list(self.template.stop_words)

    def stop_token_ids(self) -> list[int]:
        """Stop words that are single tokens of this vocabulary (matched as ids, never shown)."""
        ids = []
        for word in self.template.stop_words:
            token_id = self.tokenizer.convert_tokens_to_ids(word)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                ids.append(token_id)
        return ids

    def stop_strings(self) -> list[str]:
        """Stop words that are not single tokens: matched in the decoded text instead."""
        single = set(self.stop_token_ids())
        return [w for w in self.template.stop_words if self.tokenizer.convert_tokens_to_ids(w) not in single]

    def sampling_options(self, gen: GeneratingArguments) -> SamplingOptions:
        """The config's generation settings (``do_sample: false`` is greedy), stopping at this template's stop words."""
        return SamplingOptions(
            max_new_tokens=gen.max_new_tokens,
            temperature=gen.temperature if gen.do_sample else 0.0,
            top_p=gen.top_p,
            top_k=gen.top_k,
            repetition_penalty=gen.repetition_penalty,
            stop=self.stop_strings(),
            stop_token_ids=self.stop_token_ids(),
            skip_special_tokens=gen.skip_special_tokens,
        )

    def parse(self, text: str) -> ParsedResponse:
        return self.template.parse_response(text)

    @property
    def has_thinking(self) -> bool:
        return getattr(self.template, "thinking", "none") != "none"
