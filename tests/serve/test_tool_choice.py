"""``tool_choice`` "required" and a named function make the reply a tool call, through the real server.

The scripted tiny model answers each forced request only when the server has begun the reply
with the template's call opening (the opening is part of what it was solved on): without
forcing it sees a prompt it has no script for and writes no call.
"""

from __future__ import annotations

import json

import openai
import pytest

from tests.helpers.serving import make_scripted_model

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"The {name.split('_')[1]} of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    for name in ("get_weather", "get_time")
]
IN_ROME = [{"role": "user", "content": "Rome?"}]
IN_OSLO = [{"role": "user", "content": "Oslo?"}]
# Qwen3 writes an empty thinking block before a call it makes without thinking.
OPENING = '<think>\n\n</think>\n\n<tool_call>\n{"name": "'


@pytest.fixture(scope="module")
def server(api_server, tiny_model, tmp_path_factory):
    scripts = [
        (
            {"messages": IN_ROME, "tools": TOOLS},
            'get_time", "arguments": {"city": "Rome"}}\n</tool_call><|im_end|>',
            OPENING,
        ),
        (
            {"messages": IN_OSLO, "tools": TOOLS},
            '{"city": "Oslo"}}\n</tool_call><|im_end|>',
            OPENING + 'get_weather", "arguments": ',
        ),
        ({"messages": IN_OSLO, "tools": TOOLS}, "Sunny.<|im_end|>"),  # unforced: an answer
    ]
    model = make_scripted_model(tiny_model("llama"), tmp_path_factory.mktemp("scripted"), "qwen3", scripts)
    settings = {"model_name_or_path": str(model), "template": "qwen3", "do_sample": False}
    settings["max_new_tokens"] = 48
    with api_server(settings, env={"API_MODEL_NAME": "scripted"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)


def only_call(choice):
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    return call.function.name, json.loads(call.function.arguments)


def test_required_makes_the_reply_a_call_of_the_tool_the_model_picks(client):
    reply = client.chat.completions.create(
        model="scripted", messages=IN_ROME, tools=TOOLS, tool_choice="required"
    )
    assert only_call(reply.choices[0]) == ("get_time", {"city": "Rome"})
    assert not reply.choices[0].message.content
    assert (reply.choices[0].message.model_extra or {}).get("reasoning_content") is None


def test_a_named_function_is_the_one_called(client):
    auto = client.chat.completions.create(model="scripted", messages=IN_OSLO, tools=TOOLS)
    assert auto.choices[0].message.content == "Sunny." and not auto.choices[0].message.tool_calls
    choice = {"type": "function", "function": {"name": "get_weather"}}
    forced = client.chat.completions.create(
        model="scripted", messages=IN_OSLO, tools=TOOLS, tool_choice=choice
    )
    assert only_call(forced.choices[0]) == ("get_weather", {"city": "Oslo"})
    assert forced.usage.prompt_tokens > auto.usage.prompt_tokens  # the opening is counted as prompt


def test_a_forced_call_streams_as_a_tool_calls_delta(client):
    choice = {"type": "function", "function": {"name": "get_weather"}}
    chunks = list(
        client.chat.completions.create(
            model="scripted", messages=IN_OSLO, tools=TOOLS, tool_choice=choice, stream=True
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo"})
    ]
    assert not "".join(d.content or "" for d in deltas)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_without_tools_is_a_400_naming_it(client):
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="scripted", messages=IN_OSLO, tool_choice=choice)
        assert info.value.body["param"] == "tool_choice" and "no 'tools'" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="scripted",
            messages=IN_OSLO,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_mood"}},
        )
    assert info.value.body["param"] == "tool_choice" and "'get_mood'" in info.value.body["message"]
