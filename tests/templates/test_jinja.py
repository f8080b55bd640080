"""Template.jinja_chat_template(): transformers rendering our jinja gives exactly our text."""

from __future__ import annotations

import copy

import pytest

from lmforge.conversation import Conversation
from lmforge.templates import get_template, list_templates
from lmforge.templates.registry import FAMILY_MODULES
from tests.helpers.templates import (
    _prompt_part,
    _tokenizer,
    check_jinja,
    jinja_cases,
)

# The entries of lmforge.templates.families are checked in tests/templates/test_families.py, one
# test per template (the same comparison, fewer test items).
FAMILY_NAMES = {t.name for module in FAMILY_MODULES for t in module.TEMPLATES}
PARAMS = [
    pytest.param(t.name, case, part, id=f"{t.name}-{case}-{part}")
    for t in list_templates()
    if t.name not in FAMILY_NAMES
    for case, part in jinja_cases(t.name)
]


@pytest.mark.parametrize(("name", "case", "part"), PARAMS)
def test_jinja_renders_like_the_template(name: str, case: str, part: str) -> None:
    check_jinja(name, case, part)


@pytest.mark.parametrize("part", ["prompt", "full"])
def test_mistral_jinja_with_tool_call_ids(part: str) -> None:
    """Mistral's tool results carry the call id; the jinja writes them like lmforge does."""
    from tests.helpers.templates import _mistral_cases

    template = get_template("mistral")
    tok = copy.copy(_tokenizer("mistral_v3"))
    conv = _mistral_cases()["tools_system"]
    conv = conv if part == "full" else _prompt_part(conv)
    gen = part == "prompt"
    ours = template.render_text(tok, Conversation.from_openai(conv), add_generation_prompt=gen)
    theirs = tok.apply_chat_template(
        Conversation.from_openai(conv).to_openai()["messages"],
        tools=conv.get("tools"),
        chat_template=template.jinja_chat_template(),
        tokenize=False,
        add_generation_prompt=gen,
    )
    assert '"call_id": "abc123XYZ"' in ours
    assert theirs == ours
