"""The forced opening of a tool call, for every template: it is the start of what the template
trains the model to write for that call, so the model's own continuation completes a parseable call."""

from __future__ import annotations

import dataclasses

import pytest

from lmforge.conversation import Conversation, Message, ToolCall
from lmforge.templates import get_template, list_templates
from lmforge.templates.auto import tokenizer_template
from lmforge.templates.forcing import forced_tool_call_prefix
from lmforge.templates.render import fill, special_strings
from tests.helpers.templates import tok_for, tokenizer

TOOLS = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
    for n in ("get_weather", "get_time")
]
CALL = ToolCall(name="get_time", arguments={"city": "Roma", "tz": True})
ASK = Conversation(system="Be brief.", tools=TOOLS, messages=[Message("user", "Time in Rome?")])


def trained_reply(template, tok, conv: Conversation, thinking: bool = True) -> str:
    """What the template renders after the generation prompt for an assistant turn making CALL."""
    prompt = template.render_text(tok, conv, add_generation_prompt=True, enable_thinking=thinking)
    turn = Message("assistant", "", tool_calls=[CALL])
    full = template.render_text(
        tok, dataclasses.replace(conv, messages=[*conv.messages, turn]), enable_thinking=thinking
    )
    assert full.startswith(prompt)
    return full[len(prompt) :]


@pytest.mark.parametrize("name", [t.name for t in list_templates()])
def test_the_forced_opening_begins_the_trained_call_and_its_rest_parses(name: str) -> None:
    template, tok = get_template(name), tok_for(name)
    reply = trained_reply(template, tok, ASK)
    any_tool = forced_tool_call_prefix(template, tok, ASK)
    named = forced_tool_call_prefix(template, tok, ASK, "get_time")
    assert any_tool is not None and named is not None
    assert reply.startswith(any_tool) and reply.startswith(named)
    assert len(named) > len(any_tool) and "get_time" in named and "get_time" not in any_tool
    if template.tool_format != "glm4":  # GLM-4's call opens with the function name itself
        assert any_tool.strip()
    # the model writes the rest as it was trained to; opening + rest (less the end of turn) is the call
    specials = special_strings(tok)
    end = fill(template.assistant_end, specials) + fill(template.conversation_end, specials)
    after = fill(template.assistant_after, specials)
    reply = reply[: len(reply) - len(after)] if after and reply.endswith(after) else reply
    assert reply.endswith(end)
    rest = reply[len(named) : len(reply) - len(end)]
    parsed = template.parse_response(named + rest)
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [(CALL.name, CALL.arguments)]


def test_qwen3_opens_a_forced_call_after_the_thinking_it_skips() -> None:
    qwen3, tok = get_template("qwen3"), tok_for("qwen3")
    assert forced_tool_call_prefix(qwen3, tok, ASK) == '<think>\n\n</think>\n\n<tool_call>\n{"name": "'
    off = forced_tool_call_prefix(qwen3, tok, ASK, enable_thinking=False)
    assert off == '<tool_call>\n{"name": "'  # the empty block is already in the prompt


def test_a_tokenizer_template_that_writes_no_tool_calls_cannot_force_one() -> None:
    smollm2 = tokenizer("smollm2")  # its ChatML template drops tool_calls
    assert forced_tool_call_prefix(tokenizer_template(smollm2, "auto"), smollm2, ASK) is None
    qwen = tokenizer("qwen2_5")  # Qwen2.5's own template writes them: auto forces like the named one
    named = forced_tool_call_prefix(get_template("qwen"), qwen, ASK, "get_time")
    assert forced_tool_call_prefix(tokenizer_template(qwen, "auto"), qwen, ASK, "get_time") == named
