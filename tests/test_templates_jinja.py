"""Template.jinja_chat_template(): transformers rendering our jinja gives exactly our text."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from lmforge.conversation import Conversation
from lmforge.templates import get_template, list_templates
from test_templates_official import BASIC, CASES, THINKING, TOOLS, _prompt_part, _tokenizer


def _llama_tokenizer() -> Any:
    return _tokenizer("llama3_2")  # a vocabulary with both BOS and EOS


def _cases(name: str) -> tuple[str, ...]:
    template = get_template(name)
    cases = BASIC + TOOLS
    if template.thinking != "none":
        cases += THINKING
    return cases


PARAMS = [
    pytest.param(t.name, case, part, id=f"{t.name}-{case}-{part}")
    for t in list_templates()
    for case in _cases(t.name)
    for part in ("prompt", "full", "prompt_nothink", "full_nothink")
    if not (part.endswith("nothink") and not get_template(t.name).no_thinking_prefix)
]


@pytest.mark.parametrize(("name", "case", "part"), PARAMS)
def test_jinja_renders_like_the_template(name: str, case: str, part: str) -> None:
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
    assert theirs == ours


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
