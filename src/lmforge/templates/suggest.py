"""Which registered template renders like a tokenizer's own ``chat_template``.

A probe conversation (system prompt, two user turns, one reply) is rendered both ways; a
template whose text is identical is a match. Templates proven against an official chat
template are tried first, so the suggestion carries the strongest proof available.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from lmforge.conversation import Conversation, Message
from lmforge.templates.registry import PROVEN_AGAINST, TEMPLATES

logger = logging.getLogger(__name__)

# The conversation is rendered with and without a system prompt: families that add a default
# system prompt of their own (Qwen2.5) match only the template that adds the same one.
PROBE_TURNS = [
    Message(role="user", content="Hello!"),
    Message(role="assistant", content="Hi, how can I help?"),
    Message(role="user", content="Name a colour."),
]
PROBES = (
    Conversation(system="You are a helpful assistant.", messages=PROBE_TURNS),
    Conversation(messages=PROBE_TURNS),
)


@dataclass(frozen=True)
class Suggestion:
    """A template name and how far it is proven: "official", "documented" or "auto" (the tokenizer's own)."""

    name: str
    proof: str
    why: str


def proof_of(name: str) -> str:
    """ "official" for templates checked token for token against an official chat template."""
    if name in PROVEN_AGAINST:
        return "official"
    return "documented" if name in TEMPLATES else "auto"


def suggest_template(tokenizer: PreTrainedTokenizerBase) -> Suggestion:
    """The registered template that renders the probe exactly as the tokenizer does, else ``auto``/``empty``."""
    source = getattr(tokenizer, "chat_template", None)
    if not source:
        return Suggestion("empty", "documented", "the tokenizer has no chat_template")
    expected = [_render_with_tokenizer(tokenizer, probe) for probe in PROBES]
    if expected[0] is None:
        return Suggestion("auto", "auto", "the tokenizer's chat_template cannot render a plain conversation")
    best, best_matches = None, 0
    for name in sorted(TEMPLATES, key=lambda name: (name not in PROVEN_AGAINST, name)):
        matches = sum(
            1 for probe, text in zip(PROBES, expected, strict=True) if text == _render(name, tokenizer, probe)
        )
        if matches > best_matches:
            best, best_matches = name, matches
    if best is None:
        return Suggestion("auto", "auto", "the tokenizer's chat_template matches no registered template")
    how = "" if best_matches == len(PROBES) else " (with a system prompt)"
    return Suggestion(best, proof_of(best), f"renders exactly like the tokenizer's chat_template{how}")


def _render_with_tokenizer(tokenizer: PreTrainedTokenizerBase, conv: Conversation) -> str | None:
    messages = [{"role": "system", "content": conv.system}] if conv.system else []
    messages += [{"role": m.role, "content": m.content} for m in conv.messages]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # a model's own jinja may reject the probe (e.g. no system role)
        logger.debug("chat_template failed on the probe: %s", exc)
        return None
    return text if isinstance(text, str) else None  # (tokenize=False: always text)


def _render(name: str, tokenizer: PreTrainedTokenizerBase, conv: Conversation) -> str | None:
    try:
        return TEMPLATES[name].render_text(tokenizer, conv, add_generation_prompt=True)
    except Exception:  # a template unable to render the probe is simply not a match
        return None
