"""Text that starts an assistant reply as a tool call, for ``tool_choice`` "required" or a named function.

An OpenAI client that sets ``tool_choice`` expects a call, not a model that may or may not
choose one. We get it without constrained decoding: the reply is begun for the model with
the opening of a call written in the template's own tool format (up to the function name
for "required", up to the arguments for a named function), and the model continues from
there. The opening is cut from what the template renders for an assistant turn that makes
a call, so it is exactly the text the model was trained to write, in every format (tagged
JSON, Llama's bare JSON, Mistral's ``[TOOL_CALLS]``, DeepSeek's special tokens, GLM-4's
name line) and for templates read from a tokenizer's own ``chat_template``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from lmforge.conversation import Conversation, Message, ToolCall
from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lmforge.templates.interface import ChatTemplate

# Stand-ins rendered in place of the function name and the arguments, then cut at.
_NAME_MARK = "lmforge_forced_tool_name"
_ARGS_MARK = "lmforge_forced_tool_arguments"


def forced_tool_call_prefix(
    template: ChatTemplate,
    tokenizer: PreTrainedTokenizerBase,
    conv: Conversation,
    function: str | None = None,
    *,
    enable_thinking: bool = True,
) -> str | None:
    """The reply's forced opening: a call of ``function``, or of any tool when it is None.

    None when the template renders no tool calls (a format without them), or its rendering
    of a call does not extend the generation prompt; "" when the call would open with the
    function name itself (nothing can be written ahead of the model).
    """
    call = ToolCall(name=function or _NAME_MARK, arguments={_ARGS_MARK: 1})
    turn = Message(role="assistant", content="", tool_calls=[call])
    try:
        prompt = template.render_text(
            tokenizer, conv, add_generation_prompt=True, enable_thinking=enable_thinking
        )
        with_call = template.render_text(
            tokenizer,
            dataclasses.replace(conv, messages=[*conv.messages, turn]),
            enable_thinking=enable_thinking,
        )
    except (LmforgeError, ValueError, KeyError, TypeError):
        return None
    if not with_call.startswith(prompt):
        return None
    reply = with_call[len(prompt) :]
    if function is None:
        cut = reply.find(_NAME_MARK)
    else:
        mark = reply.find(_ARGS_MARK)
        cut = reply.rfind("{", 0, mark) if mark >= 0 else -1
    return reply[:cut] if cut >= 0 else None
