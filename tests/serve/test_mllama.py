"""`lmforge api` serving Llama 3.2 Vision (tiny random-weight Mllama) to the real openai client.

A picture costs one ``<|image|>`` token in ``usage`` (the model reads its tiles through
cross-attention), the reply depends on the picture, and video or sound is refused with 400.
"""

from __future__ import annotations

import base64

import openai
import pytest

from tests.helpers.media import mp4, png

MODEL = "tiny-mllama"
RED, BLUE = png((200, 20, 20)), png((20, 20, 200), (60, 120))


def data_url(picture: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64," + base64.b64encode(picture).decode()


@pytest.fixture(scope="module")
def client(api_server, tiny_model):
    settings = {
        "model_name_or_path": str(tiny_model("mllama")),
        "template": "mllama",
        "do_sample": False,
        "max_new_tokens": 8,
        "infer_dtype": "float32",
    }
    with api_server(settings, env={"API_MODEL_NAME": MODEL}) as server:
        import httpx

        assert httpx.get(f"{server.root}/health").json()["inputs"] == ["text", "image"]
        yield openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)


def ask(client, *parts, **extra):
    content = [{"type": "text", "text": "What is in this picture?"}, *parts]
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **extra
    )


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def test_the_reply_depends_on_the_picture_and_a_picture_is_one_prompt_token(client):
    red = ask(client, image(data_url(RED)))
    blue = ask(client, image(data_url(BLUE)))
    text_only = ask(client)
    assert red.choices[0].message.content != blue.choices[0].message.content
    assert red.choices[0].message.content != text_only.choices[0].message.content
    assert red.usage.completion_tokens == 8
    assert red.usage.prompt_tokens == text_only.usage.prompt_tokens + 1
    two = ask(client, image(data_url(RED)), image(data_url(BLUE)))
    assert two.usage.prompt_tokens == text_only.usage.prompt_tokens + 2


def test_a_streamed_picture_reply_equals_the_whole_one(client):
    whole = ask(client, image(data_url(BLUE))).choices[0].message.content
    chunks = list(ask(client, image(data_url(BLUE)), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole


def test_video_is_refused_naming_the_part(client):
    part = {"type": "video_url", "video_url": {"url": data_url(mp4([(200, 30, 30)] * 4), "video/mp4")}}
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, image(data_url(RED)), part)
    body = info.value.body
    assert body["code"] == "unsupported_media" and body["param"] == "messages[0].content[2]"
    assert "takes text, image; video input is not supported" in body["message"]
