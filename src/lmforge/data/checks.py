"""What each training stage needs from a Conversation, and why a record is dropped.

SFT needs turns in order (user, then assistant, with tool results only after a tool call),
nothing empty, and an assistant reply at the end. Preference data (``chosen``/``rejected``)
is trained on its chosen reply under SFT; KTO records tagged ``false`` (undesirable
replies) are dropped from SFT. Pre-training takes the text of the messages.
"""

from __future__ import annotations

import dataclasses

from lmforge.conversation import Conversation
from lmforge.data.formats import BadRecord


def sft_view(conv: Conversation) -> Conversation:
    """The conversation SFT trains on; :class:`BadRecord` when there is none."""
    if conv.kto_tag is False:
        raise BadRecord("undesirable reply (kto_tag false)", "SFT trains only on replies tagged true")
    messages = conv.messages
    if conv.chosen is not None and (not messages or messages[-1].role != "assistant"):
        conv = dataclasses.replace(conv, messages=[*messages, conv.chosen])
        messages = conv.messages
    if not messages:
        raise BadRecord("no assistant reply", "the sample has no messages")
    previous = None
    for index, message in enumerate(messages):
        role = message.role
        if role == "user":
            ok = previous in (None, "assistant")
        elif role == "assistant":
            ok = previous in ("user", "tool")
        else:  # a tool result answers a tool call (or follows another result of the same call)
            ok = previous == "tool" or (previous == "assistant" and bool(messages[index - 1].tool_calls))
        if not ok:
            raise BadRecord("roles out of order", f"message {index} ({role}) follows {previous or 'nothing'}")
        if not message.content.strip() and not message.tool_calls:
            raise BadRecord("empty content", f"message {index} ({role}) is empty")
        previous = role
    if previous != "assistant":
        raise BadRecord("no assistant reply", f"the last message is a {previous} turn")
    return conv


def pt_text(conv: Conversation) -> str:
    """Pre-training text: the messages' contents, one per line (one column for ``columns: {prompt: text}``)."""
    text = "\n".join(m.content for m in conv.messages if m.content)
    if not text.strip():
        raise BadRecord("empty text", "the sample has no text")
    return text
