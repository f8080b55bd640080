"""`lmforge api` and `lmforge chat` serving LLaVA-1.5 (tiny random-weight llava) with LLaMA-Factory's
own inference config (examples/inference/llava1_5.yaml, only the model swapped).

Pictures arrive through the real openai client; the reply must depend on the picture, ``usage``
must count the 16 image tokens each picture fills, and video or sound are refused with 400.
"""

from __future__ import annotations

import base64
import subprocess
import sys

import openai
import pytest
import yaml

from tests.helpers.cli import REPO_ROOT
from tests.helpers.media import mp4, png, wav

MODEL = "tiny-llava"
LF_INFERENCE = REPO_ROOT / "tests" / "configs" / "llamafactory_llava1_5_inference.yaml"
RED, BLUE = png((200, 20, 20)), png((20, 20, 200), size=(60, 120))


def lf_settings(model: str) -> dict:
    settings = yaml.safe_load(LF_INFERENCE.read_text(encoding="utf-8"))
    return {**settings, "model_name_or_path": model}


@pytest.fixture(scope="module")
def client(api_server, tiny_model):
    # LLaMA-Factory's config as is (it samples by default): greedy replies come from the request
    with api_server(lf_settings(str(tiny_model("llava"))), env={"API_MODEL_NAME": MODEL}) as server:
        yield openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64," + base64.b64encode(data).decode()


def ask(client, *parts, **extra):
    content = [*parts, {"type": "text", "text": "What is in this picture?"}]
    return client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": content}],
        temperature=0,
        max_tokens=8,
        **extra,
    )


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def test_the_reply_depends_on_the_picture_and_usage_counts_its_tokens(client):
    red = ask(client, image(data_url(RED)))
    blue = ask(client, image(data_url(BLUE)))
    text_only = ask(client)
    assert (
        red.choices[0].message.content and red.choices[0].message.content != blue.choices[0].message.content
    )
    # a 56 px crop in 14 px patches: 16 image tokens, and the sentencepiece word start "▁" that
    # "USER: <image>" leaves before them
    assert red.usage.prompt_tokens == text_only.usage.prompt_tokens + 16 + 1
    two = ask(client, image(data_url(RED)), image(data_url(BLUE)))
    assert two.usage.prompt_tokens == red.usage.prompt_tokens + 16


def test_a_streamed_picture_reply_equals_the_whole_one(client):
    whole = ask(client, image(data_url(BLUE))).choices[0].message.content
    chunks = list(ask(client, image(data_url(BLUE)), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole


def test_video_and_sound_are_refused_naming_the_part(client):
    clip = {"type": "video_url", "video_url": {"url": data_url(mp4([(200, 30, 30)] * 4), "video/mp4")}}
    sound = {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(wav(300)).decode(), "format": "wav"},
    }
    for part in (clip, sound):
        with pytest.raises(openai.BadRequestError) as info:
            ask(client, image(data_url(RED)), part)
        body = info.value.body
        assert body["code"] == "unsupported_media" and body["param"] == "messages[0].content[1]"
        assert "takes text, image;" in body["message"]


def test_lmforge_chat_with_llamafactorys_config_answers_a_picture(tiny_model, tmp_path):
    """`lmforge chat examples/inference/llava1_5.yaml`, the model swapped on the command line."""
    (tmp_path / "red.png").write_bytes(RED)
    swap = f"model_name_or_path={tiny_model('llava')}"
    result = subprocess.run(
        [sys.executable, "-m", "lmforge", "chat", str(LF_INFERENCE), swap, "max_new_tokens=4"],
        input=f"/image {tmp_path / 'red.png'}\nWhat is it?\nexit\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Type `/image PATH` to attach a file" in result.stdout
    assert "Attached red.png (image)" in result.stdout and result.stdout.count("Assistant: ") == 1
