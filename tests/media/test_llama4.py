"""Pictures for Llama 4 (tiny random-weight Llama4ForConditionalGeneration): tiles and token runs.

The reference for the prompt is transformers' own ``Llama4Processor`` (its official chat template
and its placeholder expansion) fed the same pictures. Its image processor needs torchvision,
which cannot be installed here, so the pixel values come from lmforge's tiler in both; the
tiling itself is checked against the documented algorithm (canvas choice, padding, global view).
"""

from __future__ import annotations

import asyncio
import io

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoTokenizer, BatchFeature
from transformers.image_processing_utils import ImageProcessingMixin

from lmforge.config.model import ModelArguments
from lmforge.conversation import Conversation, Message
from lmforge.infer.engine import SamplingOptions
from lmforge.infer.hf_engine import HuggingFaceEngine
from lmforge.infer.prompting import PromptBuilder
from lmforge.media.inputs import MediaInputError
from lmforge.media.llama4 import Llama4Processing, best_canvas, tile_grids
from lmforge.media.models import media_processing_for
from lmforge.model.loader import auto_model_class
from lmforge.templates import get_template
from tests.helpers.media import png


class TilerAsImageProcessor(ImageProcessingMixin):
    """lmforge's tiler in the slot Llama4Processor expects its image processor in."""

    def __init__(self, tiler) -> None:
        super().__init__()
        self.tiler = tiler

    def __call__(self, images=None, **_: object) -> BatchFeature:
        return BatchFeature(self.tiler(images))


def official_processor(path, processing: Llama4Processing):
    from transformers.models.llama4.processing_llama4 import Llama4Processor

    tokenizer = AutoTokenizer.from_pretrained(path)
    vision = AutoConfig.from_pretrained(path).vision_config
    return Llama4Processor(
        image_processor=TilerAsImageProcessor(processing.image_processor),
        tokenizer=tokenizer,
        patch_size=vision.patch_size,
        pixel_shuffle_ratio=vision.pixel_shuffle_ratio,
    )


@pytest.fixture(scope="module")
def l4(tiny_model):
    path = str(tiny_model("llama4"))
    config = AutoConfig.from_pretrained(path)
    model = auto_model_class(config).from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    processing = media_processing_for(config, path, ModelArguments())
    assert isinstance(processing, Llama4Processing)
    return path, model, tokenizer, processing


@pytest.fixture(scope="module")
def official(l4):
    path, *_, processing = l4
    return official_processor(path, processing)


PICTURES = {
    "wide": (90, 60),
    "square": (56, 56),
    "banner": (220, 50),
    "tall": (40, 130),
    "small": (34, 31),
}  # above image_min_pixels (32x32), which would upscale it first


@pytest.mark.parametrize("sizes", [["wide"], ["square", "banner"], ["tall", "small", "wide"]])
def test_the_served_prefill_equals_what_llama4_processor_builds(l4, official, sizes):
    path, _, tokenizer, processing = l4
    blobs = [png((30 * i + 40, 200 - 30 * i, 90), PICTURES[name]) for i, name in enumerate(sizes)]
    question = "Compare them." if len(sizes) > 1 else "What is this?"
    ours = PromptBuilder(tokenizer, get_template("llama4")).encode(
        Conversation(messages=[Message(role="user", content="<image>" * len(sizes) + question)])
    )
    inputs = processing.process(blobs)
    prefill = processing.expand(ours, inputs)

    content = [{"type": "image"} for _ in sizes] + [{"type": "text", "text": question}]
    text = official.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    expected = official(text=text, images=[Image.open(io.BytesIO(b)) for b in blobs], return_tensors="pt")
    assert prefill == expected["input_ids"][0].tolist()
    assert torch.equal(inputs.tensors["pixel_values"], expected["pixel_values"].float())
    # the model fills one <|patch|> per feature of the tiles
    patch = AutoConfig.from_pretrained(path).image_token_index
    assert prefill.count(patch) == inputs.tensors["pixel_values"].shape[0] * processing.tokens_per_tile


def test_tiles_follow_the_best_fitting_canvas_and_add_a_global_view(l4):
    *_, processing = l4
    tiler = processing.image_processor
    # canvases of at most 4 tiles, grouped by aspect ratio as the official processor lists them
    assert tile_grids(4) == [(1, 4), (2, 2), (1, 1), (4, 1), (1, 3), (3, 1), (1, 2), (2, 1)]
    assert best_canvas(60, 90, 56, 4) == (112, 112)  # the smallest upscale (x1.24)
    assert best_canvas(50, 220, 56, 4) == (56, 224)  # a banner keeps its row of tiles
    assert best_canvas(600, 900, 56, 4) == (112, 112)  # too big: the mildest downscale
    out = tiler([Image.new("RGB", (220, 50), (255, 255, 255))])
    assert out["aspect_ratios"].tolist() == [[1, 4]]
    assert out["pixel_values"].shape == (5, 3, 56, 56) and out["pixel_values"].dtype == torch.bfloat16
    # 220x50 fits 56x224 as 50x220 (no upscale past one tile's side): the last rows are black padding
    first = out["pixel_values"][0]
    assert torch.all(first[:, :50] == 1.0) and torch.all(first[:, 50:] == -1.0)
    assert torch.all(out["pixel_values"][4] == 1.0)  # the global view: the whole picture in one tile
    single = tiler([Image.new("RGB", (20, 15), (0, 0, 0))])
    assert single["aspect_ratios"].tolist() == [[1, 1]] and single["pixel_values"].shape[0] == 1


def test_each_picture_becomes_its_structured_token_run(l4):
    _, _, tokenizer, processing = l4
    run = processing.token_run(1, 2)
    text = tokenizer.decode(run)
    patches = "<|patch|>" * processing.tokens_per_tile
    assert text == (
        f"<|image_start|>{patches}<|tile_x_separator|>{patches}<|tile_y_separator|>"
        f"<|image|>{patches}<|image_end|>"
    )
    assert tokenizer.decode(processing.token_run(1, 1)) == f"<|image_start|><|image|>{patches}<|image_end|>"


def test_a_placeholder_count_that_does_not_match_the_pictures_is_refused(l4):
    _, _, tokenizer, processing = l4
    inputs = processing.process([png((1, 2, 3)), png((3, 2, 1))])
    ids = tokenizer("<|image|>Only one placeholder", add_special_tokens=False)["input_ids"]
    with pytest.raises(MediaInputError, match="2 images but the prompt has 1 image placeholders"):
        processing.expand(ids, inputs)
    with pytest.raises(MediaInputError, match="broken.png: not an image"):
        processing.process([b"not a picture"], ["broken.png"])


def test_an_image_request_decodes_like_generate_and_the_picture_matters(l4):
    _, model, tokenizer, processing = l4
    engine = HuggingFaceEngine(model, tokenizer, context_length=2048, media=processing)
    prompt = PromptBuilder(tokenizer, get_template("llama4")).encode(
        Conversation(messages=[Message(role="user", content="<image>What is this?")])
    )
    requests = []
    for color in ((220, 30, 30), (30, 30, 220)):
        inputs = processing.process([png(color)])
        requests.append((processing.expand(prompt, inputs), inputs))

    async def run() -> list[str]:
        await engine.start()
        options = SamplingOptions(max_new_tokens=6, temperature=0)
        out = []
        for ids, inputs in requests:
            out.append("".join([chunk.text async for chunk in engine.generate(ids, options, inputs)]))
        await engine.close()
        return out

    answers = asyncio.run(run())
    for (ids, inputs), answer in zip(requests, answers, strict=True):
        tensor = torch.tensor([ids])
        out = model.generate(
            input_ids=tensor,
            attention_mask=torch.ones_like(tensor),
            pixel_values=inputs.tensors["pixel_values"],
            max_new_tokens=6,
            do_sample=False,
        )
        assert answer == tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    assert answers[0] != answers[1]  # the picture reaches the model
