"""LLaVA-1.5 pictures (tiny random-weight LlavaForConditionalGeneration): counts, pixels, serving's prefill.

The reference is transformers' own ``LlavaProcessor`` (built from the model folder): our token
count per picture, our pixel values and the prompt the server builds must equal what it makes
of the same text and pictures; decoding must equal ``generate`` with those inputs.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoProcessor, AutoTokenizer

from lmforge.config.generating import GeneratingArguments
from lmforge.config.model import ModelArguments
from lmforge.infer.engine import SamplingOptions
from lmforge.infer.hf_engine import HuggingFaceEngine
from lmforge.infer.prompting import PromptBuilder
from lmforge.media.llava import LlavaProcessing
from lmforge.media.models import media_processing_for
from lmforge.model.loader import auto_model_class
from lmforge.serve.convert import to_conversation
from lmforge.serve.media_fetch import MediaPolicy
from lmforge.serve.protocol import ChatCompletionRequest
from lmforge.serve.service import ChatService
from lmforge.templates import get_template
from tests.helpers.media import png

RED, BLUE = png((200, 20, 20)), png((20, 20, 200), size=(60, 120))


@pytest.fixture(scope="module")
def llava(tiny_model):
    path = tiny_model("llava")
    config = AutoConfig.from_pretrained(path)
    model = auto_model_class(config).from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    processing = media_processing_for(config, str(path), ModelArguments())
    assert isinstance(processing, LlavaProcessing)
    return path, model, tokenizer, processing


def pil(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_the_tiny_model_is_llava_with_a_clip_tower_and_the_families_processor(llava):
    path, model, _, processing = llava
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(model.model.vision_tower).__name__ == "CLIPVisionModel"
    processor = AutoProcessor.from_pretrained(path)
    assert type(processor).__name__ == "LlavaProcessor"
    assert type(processor.image_processor).__name__ == "CLIPImageProcessorPil"  # no torchvision here
    assert processing.kinds == {"image"} and not processing.mrope
    assert processing.placeholders["image"] == model.config.image_token_id == processor.image_token_id


@pytest.mark.parametrize("size", [(90, 60), (56, 56), (60, 120), (300, 168)])
def test_each_picture_costs_the_processors_tokens_and_pixels(llava, size):
    path, _, _, processing = llava
    pictures = [png((200, 20, 20), size), png((20, 200, 20), (size[1], size[0]))]
    inputs = processing.process(pictures)
    processor = AutoProcessor.from_pretrained(path)
    ref = processor(text="<image> and <image>", images=[pil(p) for p in pictures], return_tensors="pt")
    placed = int((ref["input_ids"] == processor.image_token_id).sum())
    # 56 px crops in 14 px patches: 4 x 4 patch features (the CLS feature is dropped)
    assert inputs.tokens_per_item == [16, 16] and placed == 32
    torch.testing.assert_close(inputs.tensors["pixel_values"], ref["pixel_values"], rtol=0, atol=0)


def test_the_processor_config_decides_the_count(llava, tmp_path):
    """A checkpoint that keeps the CLS feature (``full``) fills one more token per picture."""
    path, _, _, _ = llava
    folder = tmp_path / "full"
    shutil.copytree(path, folder)
    settings = json.loads((folder / "processor_config.json").read_text())
    (folder / "processor_config.json").write_text(
        json.dumps({**settings, "vision_feature_select_strategy": "full"})
    )
    config = AutoConfig.from_pretrained(folder)
    processing = media_processing_for(config, str(folder), ModelArguments())
    processor = AutoProcessor.from_pretrained(folder)
    ref = processor(text="<image>", images=[pil(RED)], return_tensors="pt")
    assert processing.process([RED]).tokens_per_item == [17] == [int((ref["input_ids"] == 32000).sum())]


def served(llava, messages):
    """What the server's chat path makes of an OpenAI request: (prompt ids, media, the conversation)."""
    _, model, tokenizer, processing = llava
    engine = HuggingFaceEngine(model, tokenizer, context_length=2048, media=processing)
    service = ChatService(
        engine,
        PromptBuilder(tokenizer, get_template("llava")),
        model_name="tiny-llava",
        defaults=GeneratingArguments(),
        media=MediaPolicy(media_dir=None, allow_remote=False),
    )
    request = ChatCompletionRequest(model="tiny-llava", messages=messages)
    prepared = asyncio.run(service.prepare_chat(request))
    return prepared.prompt_ids, prepared.media, to_conversation(request)


def image(data: bytes) -> dict:
    return {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()},
    }


def test_a_served_prompt_is_the_processors_prefill(llava):
    """The chat template's text with its pictures through LlavaProcessor gives the server's ids and pixels."""
    path, _, tokenizer, _ = llava
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [image(RED), {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": "A red picture."},
        {"role": "user", "content": [{"type": "text", "text": "And this?"}, image(BLUE)]},
    ]
    ids, media, conv = served(llava, messages)
    text = get_template("llava").render_text(tokenizer, conv, add_generation_prompt=True)
    assert text.startswith("<s>Answer briefly. USER: <image>What is this? ASSISTANT: A red picture.</s>")
    processor = AutoProcessor.from_pretrained(path)
    ref = processor(text=text, images=[pil(RED), pil(BLUE)], add_special_tokens=False, return_tensors="pt")
    assert ids == ref["input_ids"][0].tolist()
    assert ids.count(processor.image_token_id) == 32
    torch.testing.assert_close(media.tensors["pixel_values"], ref["pixel_values"], rtol=0, atol=0)


def test_an_image_request_decodes_like_generate_and_the_picture_matters(llava):
    _, model, tokenizer, processing = llava
    engine = HuggingFaceEngine(model, tokenizer, context_length=2048, media=processing)
    prompts = [
        served(llava, [{"role": "user", "content": [image(p), {"type": "text", "text": "Hi?"}]}])
        for p in (RED, BLUE)
    ]
    text_only = served(llava, [{"role": "user", "content": "Hi?"}])[0]

    async def run():
        await engine.start()
        out = []
        for ids, media in [(ids, media) for ids, media, _ in prompts] + [(text_only, None)]:
            text = ""
            async for chunk in engine.generate(ids, SamplingOptions(max_new_tokens=8, temperature=0), media):
                text += chunk.text
            out.append(text)
        await engine.close()
        return out

    red, blue, plain = asyncio.run(run())
    for (ids, media, _), got in zip(prompts, (red, blue), strict=True):
        tensor = torch.tensor([ids])
        ref = model.generate(
            input_ids=tensor,
            attention_mask=torch.ones_like(tensor),
            pixel_values=media.tensors["pixel_values"],
            max_new_tokens=8,
            do_sample=False,
        )
        assert got == tokenizer.decode(ref[0, len(ids) :], skip_special_tokens=True)
    assert red != blue and red != plain  # the picture reaches the model
