"""What each training stage needs from a Conversation, and why a record is dropped.

SFT needs turns in order (user, then assistant, with tool results only after a tool call),
nothing empty, and an assistant reply at the end. Preference data (``chosen``/``rejected``)
is trained on its chosen reply under SFT; KTO records tagged ``false`` (undesirable
replies) are dropped from SFT. Pre-training takes the text of the messages.
Preference stages split a record into its prompt and its answer(s), each prompt + answer
checked as SFT checks a sample.
"""

from __future__ import annotations

import dataclasses

from lmforge.conversation import Conversation, role_order_error
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
    bad = role_order_error(messages, users_alternate=True)
    for index, message in enumerate(messages if bad is None else messages[: bad[0]]):
        if not message.content.strip() and not message.tool_calls:
            raise BadRecord("empty content", f"message {index} ({message.role}) is empty")
    if bad is not None:
        index = bad[0]
        previous = messages[index - 1].role if index else "nothing"
        raise BadRecord("roles out of order", f"message {index} ({messages[index].role}) follows {previous}")
    if messages[-1].role != "assistant":
        raise BadRecord("no assistant reply", f"the last message is a {messages[-1].role} turn")
    return conv


def pt_text(conv: Conversation) -> str:
    """Pre-training text: the messages' contents, one per line (one column for ``columns: {prompt: text}``)."""
    text = "\n".join(m.content for m in conv.messages if m.content)
    if not text.strip():
        raise BadRecord("empty text", "the sample has no text")
    return text


def pair_views(conv: Conversation) -> tuple[Conversation, Conversation, Conversation]:
    """``(prompt, prompt + chosen, prompt + rejected)`` of a preference pair; BadRecord when it is none."""
    if conv.chosen is None or conv.rejected is None:
        missing = "chosen" if conv.chosen is None else "rejected"
        raise BadRecord("no chosen or rejected reply", f"the record has no {missing} reply")
    prompt = _prompt_of(conv, conv.messages)
    if prompt.messages and prompt.messages[-1].role == "assistant":
        raise BadRecord("prompt ends with a reply", "a preference prompt ends with a user or tool turn")
    chosen = sft_view(dataclasses.replace(prompt, messages=[*prompt.messages, conv.chosen]))
    rejected = sft_view(dataclasses.replace(prompt, messages=[*prompt.messages, conv.rejected]))
    return prompt, chosen, rejected


def kto_views(conv: Conversation) -> list[tuple[Conversation, Conversation, bool]]:
    """``(prompt, prompt + answer, desirable)`` samples of a KTO record.

    A record without ``kto_tag`` is desirable (as LLaMA-Factory reads it); a preference pair
    gives two samples, its chosen reply desirable and its rejected one not.
    """
    if conv.chosen is not None or conv.rejected is not None:
        prompt, chosen, rejected = pair_views(conv)
        return [(prompt, chosen, True), (prompt, rejected, False)]
    whole = sft_view(_prompt_of(conv, conv.messages))
    return [(_prompt_of(conv, whole.messages[:-1]), whole, conv.kto_tag is not False)]


def _prompt_of(conv: Conversation, messages: list) -> Conversation:
    return dataclasses.replace(conv, messages=list(messages), chosen=None, rejected=None, kto_tag=None)
