"""Tool calls and thinking through the real server: a scripted tiny model emits them, the template parses them."""

from __future__ import annotations

import json

import openai
import pytest

from tests.helpers.serving import make_scripted_model

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
ASK_WEATHER = [{"role": "user", "content": "Weather in Paris?"}]
SAY_HI = [{"role": "user", "content": "Say hi"}]
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


@pytest.fixture(scope="module")
def server(api_server, tiny_model, tmp_path_factory):
    scripts = [
        (
            {"messages": ASK_WEATHER, "tools": TOOLS},
            f"<think>\nUse the tool.\n</think>\n\n<tool_call>\n{CALL}\n</tool_call><|im_end|>",
        ),
        ({"messages": SAY_HI}, "<think>\nA greeting.\n</think>\n\nHi there!<|im_end|>"),
    ]
    model = make_scripted_model(tiny_model("llama"), tmp_path_factory.mktemp("scripted"), "qwen3", scripts)
    settings = {
        "model_name_or_path": str(model),
        "template": "qwen3",
        "do_sample": False,
        "max_new_tokens": 64,
    }
    with api_server(settings, env={"API_MODEL_NAME": "scripted"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)


def reasoning_of(obj):
    return (obj.model_extra or {}).get("reasoning_content")


def test_tool_call_is_returned_as_tool_calls(client):
    reply = client.chat.completions.create(model="scripted", messages=ASK_WEATHER, tools=TOOLS)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content  # the call's text is not shown as content
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert reasoning_of(choice.message) == "Use the tool."


def test_tool_call_streams_as_a_tool_calls_delta(client):
    chunks = list(
        client.chat.completions.create(model="scripted", messages=ASK_WEATHER, tools=TOOLS, stream=True)
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id.startswith("call_")
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert not "".join(d.content or "" for d in deltas)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_round_trip_continues_the_conversation(client):
    first = (
        client.chat.completions.create(model="scripted", messages=ASK_WEATHER, tools=TOOLS).choices[0].message
    )
    history = [
        *ASK_WEATHER,
        {"role": "assistant", "content": None, "tool_calls": [tc.model_dump() for tc in first.tool_calls]},
        {
            "role": "tool",
            "tool_call_id": first.tool_calls[0].id,
            "content": '{"sky": "sunny", "celsius": 21}',
        },
    ]
    reply = client.chat.completions.create(model="scripted", messages=history, tools=TOOLS, max_tokens=4)
    assert reply.usage.prompt_tokens > 0 and reply.choices[0].finish_reason in (
        "length",
        "stop",
        "tool_calls",
    )


def test_thinking_comes_back_as_reasoning_content(client):
    message = client.chat.completions.create(model="scripted", messages=SAY_HI).choices[0].message
    assert message.content == "Hi there!" and reasoning_of(message) == "A greeting."


def test_thinking_streams_separately_from_the_answer(client):
    chunks = list(client.chat.completions.create(model="scripted", messages=SAY_HI, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join(reasoning_of(d) or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert reasoning == "A greeting." and content == "Hi there!"
    assert sum(1 for d in deltas if reasoning_of(d)) > 1  # streamed in pieces, not at the end
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_enable_thinking_false_changes_the_prompt(client):
    on = client.chat.completions.create(model="scripted", messages=SAY_HI, max_tokens=1)
    off = client.chat.completions.create(
        model="scripted", messages=SAY_HI, max_tokens=1, extra_body={"enable_thinking": False}
    )
    assert (
        off.usage.prompt_tokens > on.usage.prompt_tokens
    )  # the empty <think></think> block is in the prompt
