"""Pictures for Llama 3.2 Vision (tiny random-weight Mllama): the processor's tensors and decoding.

References are transformers' own: ``MllamaProcessor`` for what the model reads from a prompt
and its pictures (ids, pixel values, aspect ratios, the cross-attention mask), and ``generate``
for what the engine must decode, where the cross-attention mask grows by a row per new token.
"""

from __future__ import annotations

import asyncio
import io

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoTokenizer, MllamaProcessor
from transformers.models.mllama.processing_mllama import (
    convert_sparse_cross_attention_mask_to_dense,
    get_cross_attention_token_mask,
)

from lmforge.config.model import ModelArguments
from lmforge.conversation import Conversation, Message
from lmforge.infer.engine import SamplingOptions
from lmforge.infer.hf_engine import HuggingFaceEngine
from lmforge.infer.prompting import PromptBuilder
from lmforge.media.mllama import MllamaProcessing, picture_spans
from lmforge.media.models import media_processing_for
from lmforge.model.loader import auto_model_class
from lmforge.templates import resolve_template
from tests.helpers.media import png

RED, BLUE, GREEN = png((200, 20, 20)), png((20, 20, 200), (60, 120)), png((20, 180, 40), (140, 50))


@pytest.fixture(scope="module")
def mllama(tiny_model):
    path = str(tiny_model("mllama"))
    config = AutoConfig.from_pretrained(path)
    model = auto_model_class(config).from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    processing = media_processing_for(config, path, ModelArguments())
    assert isinstance(processing, MllamaProcessing)
    return model, tokenizer, processing


def prompt_ids(tokenizer, text: str) -> list[int]:
    """The server's prompt for one user turn through the mllama template (``<image>`` placeholders)."""
    builder = PromptBuilder(tokenizer, resolve_template("mllama", tokenizer))
    return builder.encode(Conversation(messages=[Message("user", text)]))


def pil(picture: bytes) -> Image.Image:
    return Image.open(io.BytesIO(picture)).convert("RGB")


def hf_processor(processing, tokenizer):
    return MllamaProcessor(processing.image_processor, tokenizer)


def test_the_loader_builds_the_image_text_model_and_the_image_token_is_the_real_id(mllama):
    model, tokenizer, processing = mllama
    assert type(model).__name__ == "MllamaForConditionalGeneration"
    assert (
        processing.placeholders
        == {"image": 128256}
        == {"image": tokenizer.convert_tokens_to_ids("<|image|>")}
    )
    assert processing.kinds == {"image"}  # no video, no sound


def test_the_prefill_equals_what_mllama_processor_builds(mllama):
    """Two pictures, one before the question and one after: ids keep one <|image|> each, and pixel
    values, aspect ratios and the cross-attention mask equal the processor's."""
    _, tokenizer, processing = mllama
    ids = prompt_ids(tokenizer, "<image>Compare this one and this one<image>, please.")
    inputs = processing.process([RED, BLUE])
    assert processing.expand(ids, inputs) == ids and inputs.tokens_per_item == [1, 1]
    ours = processing.batch_inputs([inputs], torch.tensor([ids]))
    text = tokenizer.decode(ids)
    reference = hf_processor(processing, tokenizer)(
        text=text, images=[[pil(RED), pil(BLUE)]], add_special_tokens=False, return_tensors="pt"
    )
    assert reference["input_ids"][0].tolist() == ids
    assert set(ours) == {"pixel_values", "aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask"}
    for key, value in ours.items():
        assert torch.equal(value, reference[key].to(value.dtype)), key
    assert ours["aspect_ratio_ids"].tolist() == [[2, 3]]  # 90x60: two tiles side by side; 60x120: stacked


def test_a_padded_batch_equals_the_processors_batch_where_tokens_are_real(mllama):
    """Rows with one and with two pictures: the fewer are padded as the image processor pads them;
    the cross-attention mask is the processor's on every real token (left padding, as the server)."""
    _, tokenizer, processing = mllama
    rows = [
        (prompt_ids(tokenizer, "<image>A short one."), [BLUE]),
        (
            prompt_ids(tokenizer, "<image><image>Two pictures side by side, then a longer question?"),
            [RED, GREEN],
        ),
    ]
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids, _ in rows])
    ours = processing.batch_inputs([processing.process(pictures) for _, pictures in rows], input_ids)
    tokenizer.pad_token = "<|eot_id|>"
    reference = hf_processor(processing, tokenizer)(
        text=[tokenizer.decode(ids) for ids, _ in rows],
        images=[[pil(p) for p in pictures] for _, pictures in rows],
        add_special_tokens=False,
        padding=True,
        return_tensors="pt",
    )
    assert torch.equal(reference["input_ids"], input_ids)
    for key in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask"):
        assert torch.equal(ours[key], reference[key].to(ours[key].dtype)), key


@pytest.mark.parametrize(
    "ids",
    [
        [5, 9, 1, 9, 1, 1, 9, 1],  # separated pictures
        [9, 9, 1, 1, 9, 1],  # adjacent pictures see the text after the run
        [1, 9, 9, 9],
        [1, 1, 9],
    ],
)
def test_picture_spans_match_transformers_token_masks(ids):
    reference = get_cross_attention_token_mask(ids, 9)
    dense = convert_sparse_cross_attention_mask_to_dense([reference], [[1] * len(reference)], 1, len(ids))
    mine = [[int(t) for t in range(len(ids)) if first <= t < end] for first, end in picture_spans(ids, 9)]
    theirs = [[int(t) for t in dense[0, :, k, 0].nonzero()[0]] for k in range(len(reference))]
    assert mine == theirs


def reference_generate(model, tokenizer, processing, ids, pictures, max_new):
    """transformers' generate from MllamaProcessor's tensors for the same prompt."""
    out = hf_processor(processing, tokenizer)(
        text=tokenizer.decode(ids),
        images=[[pil(p) for p in pictures]],
        add_special_tokens=False,
        return_tensors="pt",
    )
    generated = model.generate(**out, max_new_tokens=max_new, do_sample=False)
    return tokenizer.decode(generated[0, len(ids) :], skip_special_tokens=True)


async def collect(engine, ids, options, media=None):
    texts: dict[int, str] = {}
    count = 0
    async for chunk in engine.generate(ids, options, media):
        texts[chunk.index] = texts.get(chunk.index, "") + chunk.text
        count = chunk.num_tokens
    return [texts[i] for i in sorted(texts)], count


def test_requests_decode_like_generate_and_batch_only_with_as_many_pictures(mllama):
    """Two one-picture requests share a batch; a two-picture request and a text request each
    decode in their own (a row padded with a picture it lacks would read it). Every answer equals
    generate's, whose cross-attention mask grows by the last row at each step."""
    model, tokenizer, processing = mllama
    engine = HuggingFaceEngine(model, tokenizer, context_length=2048, max_batch=4, media=processing)
    one = prompt_ids(tokenizer, "<image>What is this?")
    two = prompt_ids(tokenizer, "<image>Is this<image> the same colour?")
    plain = prompt_ids(tokenizer, "Say something about the sea.")
    requests = [(one, [RED]), (one, [BLUE]), (two, [RED, GREEN]), (plain, [])]
    options = SamplingOptions(max_new_tokens=10, temperature=0)
    prefilled: list[int] = []  # requests per prefill
    prefill = engine._prefill
    engine._prefill = lambda batch, live: (prefilled.append(len(batch)), prefill(batch, live))[1]  # type: ignore[method-assign]

    async def run():
        await engine.start()
        out = await asyncio.gather(
            *[collect(engine, ids, options, processing.process(p) if p else None) for ids, p in requests]
        )
        await engine.close()
        return out

    results = asyncio.run(run())
    assert prefilled == [2, 1, 1]
    for (ids, pictures), ([text], count) in zip(requests, results, strict=True):
        if pictures:
            assert text == reference_generate(model, tokenizer, processing, ids, pictures, 10)
        else:
            tensor = torch.tensor([ids])
            out = model.generate(
                input_ids=tensor, attention_mask=torch.ones_like(tensor), max_new_tokens=10, do_sample=False
            )
            assert text == tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
        assert count == 10
    assert results[0][0] != results[1][0]  # the picture reaches the model


def test_two_choices_of_a_picture_request_each_see_the_picture(mllama):
    model, tokenizer, processing = mllama
    engine = HuggingFaceEngine(model, tokenizer, context_length=2048, media=processing)
    ids = prompt_ids(tokenizer, "<image>Describe it.")

    async def run():
        await engine.start()
        out = await collect(
            engine, ids, SamplingOptions(max_new_tokens=6, temperature=0, n=2), processing.process([GREEN])
        )
        await engine.close()
        return out

    texts, _ = asyncio.run(run())
    expected = reference_generate(model, tokenizer, processing, ids, [GREEN], 6)
    assert texts == [expected, expected]


def test_image_max_pixels_bounds_the_picture_before_tiling(mllama):
    _, _, processing = mllama
    small = MllamaProcessing(processing.image_processor, image_token_id=128256, max_pixels=28 * 28)
    wide = png((9, 99, 199), (400, 100))
    # 400x100 takes two tiles side by side; bounded to 56x14 first, it fits in one
    full, bounded = processing.process([wide]), small.process([wide])
    assert full.tensors["aspect_ratio_ids"].tolist() == [[2]] and bounded.tensors[
        "aspect_ratio_ids"
    ].tolist() == [[1]]
    assert full.tensors["aspect_ratio_mask"].tolist() == [[[1, 1]]]
    assert bounded.tensors["aspect_ratio_mask"].tolist() == [[[1, 0]]]
