"""What a chat template is: a declarative description, as data (what encoding and parsing return: :mod:`~lmforge.templates.results`).

Every template in :mod:`lmforge.templates.registry` is one :class:`Template` value. The
rendering rules live in :mod:`~lmforge.templates.render` and read these fields; nothing
here is specific to one model family. Slot strings use ``{content}`` for the text they
wrap and ``{bos}`` / ``{eos}`` for the tokenizer's own BOS/EOS strings (resolved at
encode time, so base-model templates work with any vocabulary). The user slot may also
use ``{turn}``, the 1-based number of that user message (ChatGLM2's ``[Round N]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from lmforge.conversation import Conversation
    from lmforge.templates.results import EncodedSample, ParsedResponse

SystemStyle = Literal["block", "first_user", "last_user", "none"]
ThinkingStyle = Literal["none", "qwen3", "deepseekr1"]


@dataclass(frozen=True)
class Template:
    """One chat format, as data.

    A conversation renders as::

        prefix + system block + (user | tool results | assistant_header + reply + assistant_end
        + assistant_after)* [+ assistant_header + generation_prefix]

    Only ``reply + assistant_end`` (and ``conversation_end``) are trained by default: the
    reply text and the end-of-turn token(s) the model must learn to emit.
    """

    name: str
    families: str = ""
    prefix: str = ""
    # The system prompt. "block": its own block rendered with ``system``; "first_user" /
    # "last_user": merged into that user message with ``system_user_join`` (Mistral's own
    # tokenizer uses the last); "none": the family has no system role, so it merges into the
    # first user message as well.
    system: str = "{content}"
    system_style: SystemStyle = "block"
    system_user_join: str = "{system}\n\n{content}"
    default_system: str = ""
    # Render the system block even without any system text (Llama 3.1+ always has its header).
    system_always: bool = False
    user: str = "{content}"
    assistant_header: str = ""
    # After tool results some families continue the assistant turn without a new header.
    assistant_header_after_tool: str | None = None
    # The trained reply body; "{content}" unless the family adds a space or newline before it.
    assistant: str = "{content}"
    # The reply body of a turn that calls tools, where it differs from ``assistant`` (GLM-4
    # writes the function name right after its header).
    assistant_tool_call: str | None = None
    assistant_end: str = ""
    assistant_after: str = ""
    # Text the model must learn to emit after the final assistant turn only (ChatGLM: the EOS).
    conversation_end: str = ""
    # One tool result, and the text that opens/closes a run of consecutive tool results.
    tool: str = "{content}"
    tool_group_start: str = ""
    tool_group_end: str = ""
    # Tool definitions and calls: the name of a format in lmforge.templates.tools.
    tool_format: str = "default"
    # Where tool definitions go: into the system text ("system"), into the first user message's
    # text ("first_user", Llama 3.1+) or as their own text before the first user slot
    # ("before_first_user"), or before the last user slot ("before_last_user", Mistral).
    tools_in: Literal["system", "first_user", "before_first_user", "before_last_user"] = "system"
    # How definitions join a system prompt; the second form is used when there is no system text.
    system_with_tools: str = "{content}\n\n{tools}"
    system_tools_only: str = "{tools}"
    # Replaces "{tools_header}" in the system slot when tools are defined (Llama 3.1+:
    # "Environment: ipython\n"); empty otherwise.
    system_tools_header: str = ""
    strip_content: bool = False
    thinking: ThinkingStyle = "none"
    # Appended to the generation prompt when thinking is switched off (Qwen3's empty block).
    no_thinking_prefix: str = ""
    stop_words: tuple[str, ...] = ()
    # Media placeholders a multimodal processor expands (one per image/video/audio).
    image_token: str = ""
    video_token: str = ""
    audio_token: str = ""
    # Notes for `lmforge template list` and docs/templates.md.
    note: str = ""

    # -- behaviour (implemented in sibling modules; kept here so callers need one object) --

    def encode(
        self,
        tokenizer: Any,
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

    def encode_batch(
        self,
        tokenizer: Any,
        convs: list[Conversation],
        *,
        add_generation_prompt: bool = False,
        train_on_prompt: bool = False,
        mask_history: bool = False,
        enable_thinking: bool = True,
        split_special_tokens: bool | None = None,
    ) -> list[EncodedSample]:
        """Encode many conversations with one fast-tokenizer call over their whole texts.

        With ``split_special_tokens`` (None: the tokenizer's own setting, as LLaMA-Factory loads
        it; serving always passes True) special-token strings inside the conversations' text are
        plain text, while the template's own markers stay control tokens (see :mod:`.plaintext`).
        """
        from lmforge.templates.plaintext import encode_conversations
        from lmforge.templates.render import render, special_strings

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
        tokenizer: Any,
        conv: Conversation,
        *,
        add_generation_prompt: bool = False,
        enable_thinking: bool = True,
    ) -> str:
        """The conversation as one string, exactly what :meth:`encode` tokenizes."""
        from lmforge.templates.render import render

        return render(
            self,
            conv,
            tokenizer,
            add_generation_prompt=add_generation_prompt,
            enable_thinking=enable_thinking,
        ).text

    def parse_response(self, text: str) -> ParsedResponse:
        """Split generated text into content, thinking and tool calls (for serving)."""
        from lmforge.templates.parse import parse_response

        return parse_response(self, text)

    def jinja_chat_template(self) -> str:
        """A jinja ``chat_template`` that renders like this template (for saved tokenizers)."""
        from lmforge.templates.jinja import to_jinja

        return to_jinja(self)
