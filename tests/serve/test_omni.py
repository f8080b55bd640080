"""`lmforge api` serving Qwen2.5-Omni's thinker (tiny random-weight) to the real openai client:
pictures, sound and video in one model; replies are text (the talker's speech is out of scope)."""

from __future__ import annotations

import base64

import httpx
import openai
import pytest

from tests.helpers.media import mp4, png, wav

MODEL = "tiny-omni"


@pytest.fixture(scope="module")
def server(api_server, tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    (folder / "clip.mp4").write_bytes(mp4([(200, 30, 30), (30, 200, 30)] * 10))
    settings = {
        "model_name_or_path": str(tiny_model("qwen2_5_omni")),
        "template": "qwen2_omni",
        "do_sample": False,
        "max_new_tokens": 8,
        "infer_dtype": "float32",
        "media_dir": str(folder),
    }
    with api_server(settings, env={"API_MODEL_NAME": MODEL}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


def ask(client, *parts):
    content = [*parts, {"type": "text", "text": "What is this?"}]
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}])


def image(picture: bytes) -> dict:
    return {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(picture).decode()},
    }


def sound(clip: bytes) -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(clip).decode(), "format": "wav"}}


def test_health_lists_pictures_video_and_sound(server):
    assert httpx.get(f"{server.root}/health").json()["inputs"] == ["text", "audio", "image", "video"]


def test_a_picture_is_answered_and_usage_counts_its_tokens(client):
    red, blue, text_only = (
        ask(client, image(png((200, 20, 20)))),
        ask(client, image(png((20, 20, 200)))),
        ask(client),
    )
    assert (
        red.choices[0].message.content and red.choices[0].message.content != blue.choices[0].message.content
    )
    # 90x60 -> a 4x6 patch grid merged 2x2: 6 <|IMAGE|> tokens between <|vision_bos|> and <|vision_eos|>
    assert red.usage.prompt_tokens == text_only.usage.prompt_tokens + 6 + 2


def test_sound_and_video_reach_the_thinker(client):
    low, high = ask(client, sound(wav(300))), ask(client, sound(wav(3000, seconds=2.0)))
    assert low.choices[0].message.content != high.choices[0].message.content
    assert high.usage.prompt_tokens - low.usage.prompt_tokens == 25  # 25 <|AUDIO|> tokens per second
    clip = ask(client, {"type": "video_url", "video_url": {"url": "clip.mp4"}})
    plain = ask(client)
    # 2 s at video_fps 2: 4 frames (64x48 snapped to 56x56) -> 2 temporal patches of 4x4 -> 8 tokens
    assert clip.usage.prompt_tokens == plain.usage.prompt_tokens + 8 + 2
