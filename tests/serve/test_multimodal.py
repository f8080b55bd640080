"""`lmforge api` serving a vision-language model (tiny random-weight Qwen2-VL) to the real openai client.

Pictures arrive as data: URLs or as files under ``media_dir``; the reply must depend on the
picture, ``usage`` must count the image tokens the model saw, and media the model cannot
take (audio, video) or cannot decode are refused with 400 naming the message part.
"""

from __future__ import annotations

import base64

import openai
import pytest

from tests.helpers.media import mp4, png, wav

MODEL = "tiny-vl"


def data_url(picture: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(picture).decode()


RED = png((200, 20, 20))
BLUE = png((20, 20, 200))


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    (folder / "red.png").write_bytes(RED)
    (folder / "broken.png").write_bytes(RED[:60])
    return folder


@pytest.fixture(scope="module")
def server(api_server, tiny_model, media_dir):
    settings = {
        "model_name_or_path": str(tiny_model("qwen2_vl")),
        "template": "qwen2_vl",
        "do_sample": False,
        "max_new_tokens": 8,
        "infer_dtype": "float32",
        "media_dir": str(media_dir),
    }
    with api_server(settings, env={"API_MODEL_NAME": MODEL}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)


def ask(client, *parts, **extra):
    content = [{"type": "text", "text": "What is in this picture?"}, *parts]
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **extra
    )


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def test_health_says_which_inputs_the_model_takes(server):
    import httpx

    assert httpx.get(f"{server.root}/health").json()["inputs"] == ["text", "image", "video"]


def test_the_reply_depends_on_the_picture_and_usage_counts_its_tokens(client):
    red = ask(client, image(data_url(RED)))
    blue = ask(client, image(data_url(BLUE)))
    text_only = ask(client)
    assert red.choices[0].message.content != blue.choices[0].message.content
    assert red.choices[0].finish_reason == "length" and red.usage.completion_tokens == 8
    # a 90x60 picture becomes a 4x6 patch grid (multiples of 28 px), merged 2x2: 6 image tokens,
    # between <|vision_start|> and <|vision_end|>
    assert red.usage.prompt_tokens == text_only.usage.prompt_tokens + 6 + 2


def test_a_picture_under_media_dir_equals_the_same_picture_inline(client, media_dir):
    inline = ask(client, image(data_url(RED))).choices[0].message.content
    for url in ("red.png", str(media_dir / "red.png"), (media_dir / "red.png").as_uri()):
        assert ask(client, image(url)).choices[0].message.content == inline


def test_a_streamed_image_reply_equals_the_whole_one(client):
    whole = ask(client, image(data_url(BLUE))).choices[0].message.content
    stream = ask(client, image(data_url(BLUE)), stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_two_pictures_in_one_message_both_count(client):
    one = ask(client, image(data_url(RED)))
    two = ask(client, image(data_url(RED)), image(data_url(png((0, 0, 0), size=(56, 56)))))
    # 56x56 -> 4x4 patches of 14 px, merged 2x2: 4 image tokens, and its start and end tokens
    assert two.usage.prompt_tokens == one.usage.prompt_tokens + 4 + 2


@pytest.mark.parametrize(
    ("part", "needle"),
    [
        (
            image("data:image/png;base64," + base64.b64encode(b"not a picture").decode()),
            "not an image that can be decoded",
        ),
        (image("broken.png"), "damaged or truncated"),
        (image("../outside.png"), "outside the allowed media_dir"),
        (image("missing.png"), "not found under media_dir"),
    ],
)
def test_bad_pictures_are_a_400_naming_the_part(client, part, needle):
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, part)
    assert needle in info.value.body["message"]
    assert info.value.body["code"] == "invalid_media"
    assert info.value.body["param"] == "messages[0].content[1]"


def test_audio_is_refused_by_a_vision_model(client):
    part = {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(b"RIFF").decode(), "format": "wav"},
    }
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, image(data_url(RED)), part)
    body = info.value.body
    assert body["code"] == "unsupported_media" and body["param"] == "messages[0].content[2]"
    assert "takes text, image, video; audio input is not supported" in body["message"]


def video(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def test_a_video_reaches_the_model_beside_a_picture(client, media_dir):
    clip = mp4([(200, 30, 30), (30, 200, 30)] * 10)  # 2 s at 10 fps
    (media_dir / "clip.mp4").write_bytes(clip)
    inline = "data:video/mp4;base64," + base64.b64encode(clip).decode()
    with_video = ask(client, image(data_url(RED)), video(inline))
    picture_only = ask(client, image(data_url(RED)))
    # video_fps 2: 4 frames of 64x48 (snapped to 56x56) -> 2 temporal patches of 4x4 -> 8 tokens
    assert with_video.usage.prompt_tokens == picture_only.usage.prompt_tokens + 8 + 2
    assert with_video.choices[0].message.content != picture_only.choices[0].message.content
    from_file = ask(client, image(data_url(RED)), video("clip.mp4"))
    assert from_file.choices[0].message.content == with_video.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, video("data:video/mp4;base64,AAAA"))
    assert (
        info.value.body["code"] == "invalid_media"
        and "not a video that can be decoded" in info.value.body["message"]
    )


def test_an_image_placeholder_typed_as_text_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "<image> twice"}, image(data_url(RED))]}
            ],
        )
    assert "1 images but the prompt has 2 image placeholders" in info.value.body["message"]


# --- audio: a tiny random-weight Qwen2-Audio -------------------------------------------------


@pytest.fixture(scope="module")
def audio_client(api_server, tiny_model, media_dir):
    (media_dir / "tone.wav").write_bytes(wav(300))
    settings = {
        "model_name_or_path": str(tiny_model("qwen2_audio")),
        "template": "qwen2_audio",
        "do_sample": False,
        "max_new_tokens": 8,
        "infer_dtype": "float32",
        "media_dir": str(media_dir),
    }
    with api_server(settings, env={"API_MODEL_NAME": "tiny-audio"}) as srv:
        yield openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0, timeout=60)


def listen(client, *parts):
    content = [*parts, {"type": "text", "text": "What do you hear?"}]
    return client.chat.completions.create(model="tiny-audio", messages=[{"role": "user", "content": content}])


def input_audio(clip: bytes, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(clip).decode(), "format": fmt}}


def test_audio_reaches_the_model_and_usage_counts_its_tokens(audio_client):
    low = listen(audio_client, input_audio(wav(300)))
    high = listen(audio_client, input_audio(wav(3000, seconds=2.0)))
    text_only = listen(audio_client)
    assert low.choices[0].message.content != high.choices[0].message.content
    # "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n" with <|AUDIO|> repeated 25 times per second
    # of sound (16 kHz -> 100 mel frames/s -> two stride-2 stages)
    assert high.usage.prompt_tokens - low.usage.prompt_tokens == 25
    assert low.usage.prompt_tokens > text_only.usage.prompt_tokens + 25


def test_an_audio_url_under_media_dir_equals_the_inline_clip(audio_client):
    inline = listen(audio_client, input_audio(wav(300))).choices[0].message.content
    from_file = listen(audio_client, {"type": "audio_url", "audio_url": {"url": "tone.wav"}})
    assert from_file.choices[0].message.content == inline


def test_undecodable_audio_and_pictures_are_refused_by_the_audio_model(audio_client):
    with pytest.raises(openai.BadRequestError) as info:
        listen(audio_client, input_audio(b"ID3\x03\x00\x00 not decodable here", fmt="mp3"))
    assert (
        info.value.body["code"] == "invalid_media"
        and "not an audio file that can be decoded" in info.value.body["message"]
    )
    assert info.value.body["param"] == "messages[0].content[0]"
    with pytest.raises(openai.BadRequestError) as info:
        listen(audio_client, image(data_url(RED)))
    assert (
        info.value.body["code"] == "unsupported_media" and "takes text, audio" in info.value.body["message"]
    )
