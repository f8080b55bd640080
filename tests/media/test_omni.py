"""Qwen2.5-Omni's thinker (tiny random-weight): pictures, video and sound in one processing.

The references are transformers' own: Qwen2_5OmniProcessor for the prefill (ids, pixel values,
grids, audio features and masks; its torchvision-only video processor replaced by our patches,
see tests/helpers/omni.py) and the thinker's ``generate`` for decoding.
"""

from __future__ import annotations

import asyncio
import io

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoTokenizer

from lmforge.config.model import ModelArguments
from lmforge.infer.engine import SamplingOptions
from lmforge.infer.hf_engine import HuggingFaceEngine
from lmforge.media.inputs import MediaInputError
from lmforge.media.models import media_processing_for
from lmforge.media.omni import OmniProcessing
from lmforge.model.loader import auto_model_class
from tests.helpers.media import mp4, png, wav
from tests.helpers.omni import official_processor

IMAGE = "<|vision_bos|><|IMAGE|><|vision_eos|>"
VIDEO = "<|vision_bos|><|VIDEO|><|vision_eos|>"
AUDIO = "<|audio_bos|><|AUDIO|><|audio_eos|>"
PROMPT = "<|im_start|>user\n{media}{text}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def omni(tiny_model):
    path = tiny_model("qwen2_5_omni")
    config = AutoConfig.from_pretrained(path)
    model = auto_model_class(config).from_pretrained(str(path), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    return path, config, model, tokenizer


def processing(omni, **keys) -> OmniProcessing:
    path, config, _, _ = omni
    media = media_processing_for(config, str(path), ModelArguments(**keys))
    assert isinstance(media, OmniProcessing)
    return media


def picture(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_the_tiny_thinker_asset_and_all_three_kinds(omni):
    """The tiny folder: a thinker config naming the Omni tokens its tokenizer adds, and one
    preprocessor_config.json holding the image processor's and the feature extractor's settings."""
    from transformers import AutoFeatureExtractor, AutoImageProcessor

    path, config, model, tokenizer = omni
    assert type(model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    for key, token in (("image_token_id", "<|IMAGE|>"), ("audio_start_token_id", "<|audio_bos|>")):
        assert getattr(config, key) == tokenizer.convert_tokens_to_ids(token)
    assert type(AutoImageProcessor.from_pretrained(path)).__name__ == "Qwen2VLImageProcessorPil"
    assert type(AutoFeatureExtractor.from_pretrained(path)).__name__ == "WhisperFeatureExtractor"
    assert processing(omni).kinds == {"image", "video", "audio"}


@pytest.mark.parametrize("use_audio_in_video", [False, True])
def test_the_prefill_equals_the_official_processors(omni, use_audio_in_video):
    """A picture, a 4 s video and a 3 s clip: ids (the video's sound interleaved in 2 s chunks when
    use_audio_in_video), pixel values, grids, audio features and masks as Qwen2_5OmniProcessor builds them."""
    path, _, _, tokenizer = omni
    media = processing(omni, use_audio_in_video=use_audio_in_video)
    red, clip, sound = png((200, 20, 20)), mp4([(200, 30, 30), (30, 200, 30)] * 20), wav(440, 3.0)
    inputs = media.process([red, clip, sound], kinds=["image", "video", "audio"])
    text = PROMPT.format(media=f"{IMAGE}Look. {VIDEO}{AUDIO}", text="What happens?")
    ours = media.expand(tokenizer(text)["input_ids"], inputs)

    seconds = float(inputs.tensors["video_second_per_grid"][0])
    assert inputs.tensors["video_grid_thw"].tolist() == [[4, 4, 4]] and seconds == 1.0  # 8 frames at 2 fps
    reference = official_processor(path)(
        text=text.replace(AUDIO, "") if use_audio_in_video else text,
        images=[picture(red)],
        videos=(inputs.tensors["video_grid_thw"], inputs.tensors["pixel_values_videos"]),
        audio=[media.audio._decode(sound, "clip")],
        use_audio_in_video=use_audio_in_video,
        fps=media.vision.image_processor.temporal_patch_size / seconds,
        return_tensors="pt",
    )
    assert ours == reference["input_ids"][0].tolist()
    for key in ("pixel_values", "image_grid_thw", "input_features", "feature_attention_mask"):
        assert torch.equal(inputs.tensors[key], reference[key]), key
    assert inputs.tensors["video_second_per_grid"].tolist() == list(reference["video_second_per_grid"])
    if use_audio_in_video:  # 4 patches of 4 tokens, 1 s apart, and 75 audio tokens, in 2 s chunks
        video, audio = media.placeholders["video"], media.placeholders["audio"]
        start = ours.index(media.bounds["audio_start_token_id"]) + 1
        runs = ours[start : start + 8 + 50 + 8 + 25 + 1]
        assert runs == [video] * 8 + [audio] * 50 + [video] * 8 + [audio] * 25 + [
            media.bounds["audio_end_token_id"]
        ]


def test_use_audio_in_video_needs_a_clip_after_each_video(omni):
    path, _, _, tokenizer = omni
    media = processing(omni, use_audio_in_video=True)
    inputs = media.process([mp4([(9, 9, 9)] * 20)], kinds=["video"])
    with pytest.raises(MediaInputError, match="1 videos and 0 audio clips"):
        media.expand(tokenizer(PROMPT.format(media=VIDEO, text="?"))["input_ids"], inputs)
    inputs = media.process([mp4([(9, 9, 9)] * 20), wav(300)], kinds=["video", "audio"])
    with pytest.raises(MediaInputError, match="needs its sound clip after it"):
        media.expand(tokenizer(PROMPT.format(media=AUDIO + VIDEO, text="?"))["input_ids"], inputs)


async def _collect(engine, ids, options, media=None):
    text = ""
    async for chunk in engine.generate(ids, options, media):
        text += chunk.text
    return text


@pytest.mark.parametrize("use_audio_in_video", [False, True])
def test_picture_video_and_sound_requests_decode_like_the_thinkers_generate(omni, use_audio_in_video):
    """Requests with a picture, a sound clip, a video with its sound, and plain text share a batch;
    each decodes as the thinker's generate does alone (positions from its own get_rope_index)."""
    _, _, model, tokenizer = omni
    media = processing(omni, use_audio_in_video=use_audio_in_video)
    engine = HuggingFaceEngine(model, tokenizer, context_length=4096, max_batch=4, media=media)
    requests = []
    for blobs, kinds, placeholders in (
        ([png((200, 20, 20))], ["image"], IMAGE),
        ([wav(300, 1.5)], ["audio"], AUDIO),
        ([mp4([(30, 30, 200), (30, 200, 30)] * 15), wav(900, 3.0)], ["video", "audio"], VIDEO + AUDIO),
    ):
        inputs = media.process(blobs, kinds=kinds)
        ids = media.expand(tokenizer(PROMPT.format(media=placeholders, text="What?"))["input_ids"], inputs)
        requests.append((ids, inputs))
    requests.append((tokenizer(PROMPT.format(media="", text="Hello there"))["input_ids"], None))

    async def run():
        await engine.start()
        options = SamplingOptions(max_new_tokens=8, temperature=0)
        out = await asyncio.gather(*[_collect(engine, ids, options, inputs) for ids, inputs in requests])
        await engine.close()
        return out

    texts = asyncio.run(run())
    assert engine.stats()["batches"] == 1
    for (ids, inputs), text in zip(requests, texts, strict=True):
        tensor = torch.tensor([ids])
        extra = dict(inputs.tensors) if inputs is not None else {}
        out = model.generate(
            input_ids=tensor,
            attention_mask=torch.ones_like(tensor),
            max_new_tokens=8,
            do_sample=False,
            use_audio_in_video=use_audio_in_video,
            **extra,
        )
        assert text == tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    assert len(set(texts)) == 4  # each medium reaches the model
