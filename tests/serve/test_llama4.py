"""`lmforge api` serving Llama 4 (tiny random-weight Llama4ForConditionalGeneration) to the openai client.

The reply must depend on the picture, ``usage`` must count the structured image tokens the model
saw (as many as Llama4Processor builds), and video or sound are refused with a 400.
"""

from __future__ import annotations

import base64
import io

import openai
import pytest
from PIL import Image

from tests.helpers.media import mp4, png, wav
from tests.media.test_llama4 import official_processor

MODEL = "tiny-llama4"
RED = png((200, 20, 20))  # 90x60: 2x2 tiles and the global view
BLUE = png((20, 20, 200), size=(56, 56))  # one tile


def data_url(picture: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(picture).decode()


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.fixture(scope="module")
def server(api_server, tiny_model, tmp_path_factory):
    media_dir = tmp_path_factory.mktemp("media")
    (media_dir / "red.png").write_bytes(RED)
    settings = {
        "model_name_or_path": str(tiny_model("llama4")),
        "template": "llama4",
        "do_sample": False,
        "max_new_tokens": 6,
        "infer_dtype": "float32",
        "media_dir": str(media_dir),
    }
    with api_server(settings, env={"API_MODEL_NAME": MODEL}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


def ask(client, *parts):
    content = [*parts, {"type": "text", "text": "What is in this picture?"}]
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}])


def test_health_says_the_model_takes_pictures(server):
    import httpx

    assert httpx.get(f"{server.root}/health").json()["inputs"] == ["text", "image"]


def test_the_reply_depends_on_the_picture_and_usage_counts_the_processors_tokens(client, tiny_model):
    from transformers import AutoConfig

    from lmforge.config.model import ModelArguments
    from lmforge.media.models import media_processing_for

    red, blue = ask(client, image(data_url(RED))), ask(client, image(data_url(BLUE)))
    assert red.choices[0].message.content != blue.choices[0].message.content
    assert red.usage.completion_tokens == 6
    path = str(tiny_model("llama4"))
    processor = official_processor(
        path, media_processing_for(AutoConfig.from_pretrained(path), path, ModelArguments())
    )
    for reply, picture in ((red, RED), (blue, BLUE)):
        content = [{"type": "image"}, {"type": "text", "text": "What is in this picture?"}]
        text = processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        expected = processor(text=text, images=[Image.open(io.BytesIO(picture))], return_tensors="pt")
        assert reply.usage.prompt_tokens == expected["input_ids"].shape[1]


def test_a_picture_under_media_dir_equals_the_same_picture_inline(client):
    inline = ask(client, image(data_url(RED))).choices[0].message.content
    assert ask(client, image("red.png")).choices[0].message.content == inline


def test_two_pictures_in_one_message_both_count(client):
    one = ask(client, image(data_url(RED)))
    two = ask(client, image(data_url(RED)), image(data_url(BLUE)))
    # one tile: <|image_start|><|image|>, 4 patches, <|image_end|>
    assert two.usage.prompt_tokens == one.usage.prompt_tokens + 7


@pytest.mark.parametrize(
    "part",
    [
        {
            "type": "input_audio",
            "input_audio": {"data": base64.b64encode(wav(300)).decode(), "format": "wav"},
        },
        {"type": "video_url", "video_url": {"url": data_url(mp4([(200, 30, 30)] * 4), "video/mp4")}},
    ],
)
def test_sound_and_video_are_refused(client, part):
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, image(data_url(RED)), part)
    body = info.value.body
    assert body["code"] == "unsupported_media" and body["param"] == "messages[0].content[1]"
    assert "takes text, image;" in body["message"]
