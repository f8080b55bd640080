"""What a declarative chat template writes where: its slot strings and placement rules, as data.

:class:`TemplateSlots` holds the fields only; :class:`~lmforge.templates.template.Template`
adds the behaviour (encode, render, parse), and every template in
:mod:`lmforge.templates.registry` is one such value. The fields live apart from the behaviour
so that the modules the behaviour calls (:mod:`.render`, :mod:`.jinja`) can read them without
importing back. The rendering rules live in :mod:`~lmforge.templates.render`; nothing here is
specific to one model family. Slot strings use ``{content}`` for the text they
wrap and ``{bos}`` / ``{eos}`` for the tokenizer's own BOS/EOS strings (resolved at
encode time, so base-model templates work with any vocabulary). The user slot may also
use ``{turn}``, the 1-based number of that user message (ChatGLM2's ``[Round N]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SystemStyle = Literal["block", "first_user", "last_user", "none"]
ThinkingStyle = Literal["none", "qwen3", "deepseekr1"]
ToolsIn = Literal["system", "first_user", "before_first_user", "before_last_user"]

# The tags of a thinking block, as every thinking family writes them.
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class TemplateSlots:
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
    # Tool definitions and calls: the name of a format in render.TOOL_TEXTS (and parse.CALL_PARSERS).
    tool_format: str = "default"
    # Where tool definitions go: into the system text ("system"), into the first user message's
    # text ("first_user", Llama 3.1+) or as their own text before the first user slot
    # ("before_first_user"), or before the last user slot ("before_last_user", Mistral).
    tools_in: ToolsIn = "system"
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
