"""Template.jinja_chat_template(): transformers rendering our jinja gives exactly our text."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from lmforge.conversation import Conversation
from lmforge.templates import get_template, list_templates
from lmforge.templates.registry import FAMILY_MODULES
from test_templates_official import BASIC, CASES, THINKING, TOOLS, _prompt_part, _tokenizer


def _llama_tokenizer() -> Any:
    return _tokenizer("llama3_2")  # a vocabulary with both BOS and EOS


def _cases(name: str) -> tuple[str, ...]:
    template = get_template(name)
    cases = BASIC + TOOLS
    if template.thinking != "none":
        cases += THINKING
    return cases


def jinja_cases(name: str) -> list[tuple[str, str]]:
    """The (case, part) pairs a template's jinja is checked on."""
    return [
        (case, part)
        for case in _cases(name)
        for part in ("prompt", "full", "prompt_nothink", "full_nothink")
        if not (part.endswith("nothink") and not get_template(name).no_thinking_prefix)
    ]


def check_jinja(name: str, case: str, part: str) -> None:
    """transformers rendering the template's jinja gives exactly lmforge's text."""
    template = get_template(name)
    tok = copy.copy(_llama_tokenizer())
    conv = CASES[case] if part.startswith("full") else _prompt_part(CASES[case])
    gen = part.startswith("prompt")
    thinking = not part.endswith("nothink")
    ours = template.render_text(
        tok, Conversation.from_openai(conv), add_generation_prompt=gen, enable_thinking=thinking
    )
    extra = {} if thinking else {"enable_thinking": False}
    theirs = tok.apply_chat_template(
        Conversation.from_openai(conv).to_openai()["messages"],
        tools=conv.get("tools"),
        chat_template=template.jinja_chat_template(),
        tokenize=False,
        add_generation_prompt=gen,
        **extra,
    )
    assert theirs == ours, f"{name} {case} {part}"


# The entries of lmforge.templates.families are checked in tests/test_templates_families.py, one
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
    from test_templates_official import _mistral_cases

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
