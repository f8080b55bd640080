"""Pictures for a vision-language model (tiny random-weight Qwen2-VL): processing and batched decoding.

The reference is transformers' own ``generate`` with the same pixel values: the engine must
decode an image request exactly as it does, alone or sharing a batch with text requests.
"""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoTokenizer

from lmforge.config.model import ModelArguments
from lmforge.infer.engine import SamplingOptions
from lmforge.infer.hf_engine import HuggingFaceEngine
from lmforge.media.audio import AudioProcessing
from lmforge.media.inputs import MediaInputError
from lmforge.media.models import media_processing_for
from lmforge.media.vision import VisionProcessing
from lmforge.model.loader import auto_model_class
from tests.helpers.media import mp4, png, wav

PROMPT = (
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{text}<|im_end|>\n<|im_start|>assistant\n"
)


def load_tiny(path, **model_args):
    """(model, left-padding tokenizer, media processing) of a tiny multimodal model folder."""
    path = str(path)
    config = AutoConfig.from_pretrained(path)
    model = auto_model_class(config).from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    return model, tokenizer, media_processing_for(config, path, ModelArguments(**model_args))


@pytest.fixture(scope="module")
def vl(tiny_model):
    model, tokenizer, processing = load_tiny(tiny_model("qwen2_vl"))
    assert isinstance(processing, VisionProcessing)
    return model, tokenizer, processing


def image_prompt(tokenizer, processing, picture: bytes, text: str = "What is this?"):
    inputs = processing.process([picture])
    return processing.expand(tokenizer(PROMPT.format(text=text))["input_ids"], inputs), inputs


def reference(model, tokenizer, processing, ids, inputs, max_new):
    tensor = torch.tensor([ids])
    extra = (
        {k: v for k, v in inputs.tensors.items() if k != "second_per_grid_ts"} if inputs is not None else {}
    )
    if inputs is not None:
        extra = {**extra, "mm_token_type_ids": processing.token_types(tensor)}
    out = model.generate(
        input_ids=tensor,
        attention_mask=torch.ones_like(tensor),
        max_new_tokens=max_new,
        do_sample=False,
        **extra,
    )
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


async def collect(engine, ids, options, media=None, started=None):
    text, count = "", 0
    async for chunk in engine.generate(ids, options, media):
        text += chunk.text
        count = chunk.num_tokens
        if started is not None and count == 3:
            started.set()
    return text, count


def test_loader_picks_the_image_text_class_for_qwen2_vl(vl):
    model, _, _ = vl
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"


def test_an_image_request_decodes_like_generate_and_the_picture_matters(vl):
    model, tokenizer, processing = vl
    engine = HuggingFaceEngine(model, tokenizer, context_length=2048, media=processing)
    red = image_prompt(tokenizer, processing, png((200, 20, 20)))
    blue = image_prompt(tokenizer, processing, png((20, 20, 200), size=(60, 120)))

    async def run():
        await engine.start()
        out = [
            await collect(engine, ids, SamplingOptions(max_new_tokens=8, temperature=0), inputs)
            for ids, inputs in (red, blue)
        ]
        await engine.close()
        return out

    (red_text, red_count), (blue_text, _) = asyncio.run(run())
    assert red_text == reference(model, tokenizer, processing, *red, 8)
    assert blue_text == reference(model, tokenizer, processing, *blue, 8)
    assert red_count == 8
    assert red_text != blue_text  # the picture reaches the model


def test_image_and_text_requests_share_a_batch_and_decode_as_if_alone(vl):
    """A text request decodes; an image request and another text request join it mid-way.
    Each row keeps its own M-RoPE offset, so every answer equals generate's alone."""
    model, tokenizer, processing = vl
    engine = HuggingFaceEngine(model, tokenizer, context_length=2048, max_batch=4, media=processing)
    text_ids = tokenizer(PROMPT.replace("<|vision_start|><|image_pad|><|vision_end|>", "").format(text="Hi"))[
        "input_ids"
    ]
    other_ids = tokenizer("A plain prompt about the sea and the sky, long enough to be wider")["input_ids"]
    image_ids, image_inputs = image_prompt(tokenizer, processing, png((30, 160, 90), size=(120, 90)))

    async def run():
        await engine.start()
        started = asyncio.Event()
        head = asyncio.create_task(
            collect(engine, text_ids, SamplingOptions(max_new_tokens=24, temperature=0), started=started)
        )
        await started.wait()
        rest = [
            collect(engine, image_ids, SamplingOptions(max_new_tokens=10, temperature=0), image_inputs),
            collect(engine, other_ids, SamplingOptions(max_new_tokens=6, temperature=0)),
        ]
        out = await asyncio.gather(head, *rest)
        await engine.close()
        return out

    (head_text, _), (image_text, image_count), (other_text, _) = asyncio.run(run())
    assert engine.stats()["requests_joined"] == 2 and engine.stats()["batches"] == 1
    assert head_text == reference(model, tokenizer, processing, text_ids, None, 24)
    assert image_text == reference(model, tokenizer, processing, image_ids, image_inputs, 10)
    assert other_text == reference(model, tokenizer, processing, other_ids, None, 6)
    assert image_count == 10


def test_two_choices_of_an_image_request_each_see_the_picture(vl):
    model, tokenizer, processing = vl
    engine = HuggingFaceEngine(model, tokenizer, context_length=2048, media=processing)
    ids, inputs = image_prompt(tokenizer, processing, png((250, 200, 0)))

    async def run():
        await engine.start()
        texts = ["", ""]
        async for chunk in engine.generate(
            ids, SamplingOptions(max_new_tokens=6, temperature=0, n=2), inputs
        ):
            texts[chunk.index] += chunk.text
        await engine.close()
        return texts

    expected = reference(model, tokenizer, processing, ids, inputs, 6)
    assert asyncio.run(run()) == [expected, expected]


def test_placeholders_are_repeated_once_per_image_feature(vl):
    _, tokenizer, processing = vl
    inputs = processing.process([png((1, 2, 3), size=(112, 56)), png((9, 9, 9), size=(56, 56))])
    grid = inputs.tensors["image_grid_thw"]
    assert inputs.tokens_per_item == [int(g.prod()) // 4 for g in grid]
    text = PROMPT.format(text="and <|vision_start|><|image_pad|><|vision_end|> too")
    ids = processing.expand(tokenizer(text)["input_ids"], inputs)
    assert ids.count(processing.placeholders["image"]) == sum(inputs.tokens_per_item)
    with pytest.raises(MediaInputError, match="2 images but the prompt has 1 image placeholders"):
        processing.expand(tokenizer(PROMPT.format(text="x"))["input_ids"], inputs)


def test_image_max_pixels_bounds_the_token_count(vl):
    _, _, processing = vl
    small = VisionProcessing(
        processing.image_processor,
        image_token_id=processing.placeholders["image"],
        max_pixels=56 * 56,
        min_pixels=28 * 28,
    )
    large_picture = png((10, 10, 10), size=(400, 400))
    assert small.process([large_picture]).tokens_per_item == [4]  # 56x56 -> 4x4 patches -> 2x2 merged
    assert processing.process([large_picture]).tokens_per_item[0] > 4
    tiny = small.process([png((10, 10, 10), size=(8, 8))])  # upscaled to the minimum, not refused
    assert tiny.tokens_per_item[0] >= 1


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data needed to read the size)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_undecodable_and_oversized_pictures_are_refused_with_their_name(vl):
    _, _, processing = vl
    with pytest.raises(
        MediaInputError, match=r"^messages\[0\].content\[1\]: not an image that can be decoded"
    ):
        processing.process([b"certainly not a picture"], ["messages[0].content[1]"])
    with pytest.raises(MediaInputError, match="image 1: the image is 10000x10000 pixels, more than the"):
        processing.process([_png_header_only(10_000, 10_000)], ["image 1"])
    with pytest.raises(MediaInputError, match="image 2: the image is larger than the"):
        processing.process([_png_header_only(100_000, 100_000)], ["image 2"])
    with pytest.raises(MediaInputError, match="image 3: the image data is damaged or truncated"):
        processing.process([_png_header_only(64, 64)], ["image 3"])


def test_a_text_model_has_no_image_processing(tiny_model):
    path = str(tiny_model("llama"))
    config = AutoConfig.from_pretrained(path)
    assert media_processing_for(config, path, ModelArguments()) is None


# --- audio (tiny random-weight Qwen2-Audio) ------------------------------------------------

AUDIO_PROMPT = "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n{text}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def audio(tiny_model):
    model, tokenizer, processing = load_tiny(tiny_model("qwen2_audio"))
    assert isinstance(processing, AudioProcessing)
    return model, tokenizer, processing


def test_an_audio_request_decodes_like_generate_and_the_clip_matters(audio):
    model, tokenizer, processing = audio
    engine = HuggingFaceEngine(model, tokenizer, context_length=2048, max_batch=4, media=processing)
    prompts = []
    for clip in (wav(440), wav(2000, seconds=2.5, rate=22050)):
        inputs = processing.process([clip])
        prompts.append(
            (processing.expand(tokenizer(AUDIO_PROMPT.format(text="What?"))["input_ids"], inputs), inputs)
        )
    text_ids = tokenizer("A text request decoding beside the audio")["input_ids"]

    async def run():
        await engine.start()
        options = SamplingOptions(max_new_tokens=8, temperature=0)
        out = await asyncio.gather(
            *[collect(engine, ids, options, inputs) for ids, inputs in prompts],
            collect(engine, text_ids, options),
        )
        await engine.close()
        return out

    results = asyncio.run(run())
    assert engine.stats()["batches"] == 1  # both clips and the text request decoded together
    for (ids, inputs), (text, count) in zip(prompts, results, strict=False):
        tensor = torch.tensor([ids])
        out = model.generate(
            input_ids=tensor,
            attention_mask=torch.ones_like(tensor),
            max_new_tokens=8,
            do_sample=False,
            **inputs.tensors,
        )
        assert text == tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
        assert count == 8
    assert results[0][0] != results[1][0]
    assert results[2][0] == reference(model, tokenizer, None, text_ids, None, 8)


def test_audio_token_counts_follow_the_clip_length_up_to_the_30_s_window(audio):
    _, _, processing = audio
    # 1 s at 16 kHz: 100 mel frames -> 50 after the stride-2 conv -> 25 after pooling
    assert processing.process([wav(440, 1.0)]).tokens_per_item == [25]
    assert processing.process([wav(440, 2.0, rate=8000)]).tokens_per_item == [50]  # resampled to 16 kHz
    assert processing.process([wav(440, 31.0, rate=8000)]).tokens_per_item == [750]  # cut at 30 s


@pytest.mark.parametrize(
    ("width", "channels", "rate"), [(1, 1, 16000), (3, 2, 48000), (4, 1, 44100), (2, 2, 16000)]
)
def test_pcm_wav_formats_decode_to_the_same_tone(audio, width, channels, rate):
    _, _, processing = audio
    reference_clip = processing._decode(wav(440, 0.5), "ref")
    clip = processing._decode(wav(440, 0.5, rate=rate, width=width, channels=channels), "clip")
    assert abs(len(clip) - len(reference_clip)) <= 1
    n = min(len(clip), len(reference_clip))
    assert float(abs(clip[:n] - reference_clip[:n]).max()) < 0.05


def test_undecodable_audio_is_refused_with_its_name(audio):
    _, _, processing = audio
    with pytest.raises(
        MediaInputError, match=r"^messages\[0\].content\[0\]: not an audio file that can be decoded"
    ):
        processing.process([b"ID3\x03\x00 an mp3 header"], ["messages[0].content[0]"])
    with pytest.raises(MediaInputError, match="the audio clip is empty"):
        processing.process([wav(440, 0.0)], ["clip"])


def compressed(freq: float, codec: str, container: str, rate: int = 44100, seconds: float = 1.0) -> bytes:
    """A tone encoded with PyAV (FFmpeg): what users upload when it is not WAV."""
    import av
    import numpy as np

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        tone = (0.5 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)
        fmt = "s16" if codec == "flac" else "fltp"
        data = (tone * 32767).astype(np.int16) if fmt == "s16" else tone
        frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format=fmt, layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize(("codec", "container"), [("flac", "flac"), ("libmp3lame", "mp3")])
def test_compressed_audio_decodes_through_pyav_to_the_same_tone(audio, codec, container):
    import numpy as np

    _, _, processing = audio
    reference_clip = processing._decode(wav(440, 1.0), "wav")
    clip = processing._decode(compressed(440, codec, container), container)
    assert abs(len(clip) - len(reference_clip)) < 0.05 * len(reference_clip)  # codec padding at most
    # same pitch: the strongest frequency of both is 440 Hz
    peak = lambda x: np.argmax(np.abs(np.fft.rfft(x[:16000]))) * 16000 / len(x[:16000])  # noqa: E731
    assert abs(peak(clip) - 440) <= 2 and abs(peak(reference_clip) - 440) <= 2


# --- video (Qwen2-VL, frames decoded with PyAV) ---------------------------------------------


def test_video_patches_follow_the_models_temporal_layout(vl):
    """Frame pairs become 2-frame temporal patches laid out as Qwen2-VL's original processor does:
    (t, h/m, w/m, m, m, channel, frame-in-pair, patch row, patch column)."""
    import numpy as np
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    _, _, processing = vl
    frames = [Image.new("RGB", (84, 56), (40 * i, 255 - 40 * i, 90)) for i in range(4)]
    for i, frame in enumerate(frames):
        frame.paste((255, 255, 255), (i * 10, 0, i * 10 + 14, 20))
    ip = processing.image_processor
    out = ip(images=frames, return_tensors="pt")
    from lmforge.media.vision import join_temporal_patches

    patches, grid = join_temporal_patches(out["pixel_values"], out["image_grid_thw"], 2, ip.patch_size)
    height, width = smart_resize(
        56, 84, factor=28, min_pixels=ip.size.shortest_edge, max_pixels=ip.size.longest_edge
    )
    stack = np.stack(
        [
            (
                np.asarray(f.resize((width, height), Image.Resampling.BICUBIC), np.float32) / 255
                - ip.image_mean
            )
            / ip.image_std
            for f in frames
        ]
    ).transpose(0, 3, 1, 2)  # (T, C, H, W)
    p, m = ip.patch_size, ip.merge_size
    t, gh, gw = 2, height // p, width // p
    expected = stack.reshape(t, 2, 3, gh // m, m, p, gw // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    expected = expected.reshape(t * gh * gw, 3 * 2 * p * p)
    assert grid.tolist() == [[t, gh, gw]]
    torch.testing.assert_close(patches, torch.from_numpy(expected).float(), atol=2e-2, rtol=0)


def test_a_video_request_decodes_like_generate_and_the_clip_matters(vl):
    model, tokenizer, processing = vl
    engine = HuggingFaceEngine(model, tokenizer, context_length=4096, media=processing)
    prompt = PROMPT.replace("image_pad", "video_pad")
    clips = [mp4([(200, 30, 30)] * 20), mp4([(30, 30, 200), (30, 200, 30)] * 10)]
    requests = []
    for clip in clips:
        inputs = processing.process([clip], kinds=["video"])
        requests.append(
            (processing.expand(tokenizer(prompt.format(text="What happens?"))["input_ids"], inputs), inputs)
        )

    async def run():
        await engine.start()
        options = SamplingOptions(max_new_tokens=8, temperature=0)
        out = await asyncio.gather(*[collect(engine, ids, options, inputs) for ids, inputs in requests])
        await engine.close()
        return out

    results = asyncio.run(run())
    for (ids, inputs), (text, _) in zip(requests, results, strict=True):
        # 2 s at video_fps 2: 4 frames -> 2 temporal patches of 4x4 (64x48 snapped to 56x56) -> 2*16/4 tokens
        assert inputs.tensors["video_grid_thw"].tolist() == [[2, 4, 4]] and inputs.tokens_per_item == [8]
        assert text == reference(model, tokenizer, processing, ids, inputs, 8)
    assert results[0][0] != results[1][0]


def test_video_sampling_follows_video_fps_and_video_maxlen(vl):
    _, _, processing = vl
    clip = mp4([(10 * i, 0, 0) for i in range(20)])  # 20 frames at 10 fps: 2 s
    grid = lambda proc: proc.process([clip], kinds=["video"]).tensors["video_grid_thw"][0, 0].item()  # noqa: E731
    assert grid(processing) == 2  # video_fps 2 -> 4 frames -> 2 temporal patches
    denser = VisionProcessing(processing.image_processor, image_token_id=1, video_token_id=2, video_fps=5.0)
    assert grid(denser) == 5  # 10 frames
    capped = VisionProcessing(
        processing.image_processor, image_token_id=1, video_token_id=2, video_fps=5.0, video_maxlen=4
    )
    assert grid(capped) == 2
    with pytest.raises(MediaInputError, match="^clip: not a video that can be decoded"):
        processing.process([b"\x00\x00\x00\x18ftypmp42 but nothing else"], ["clip"], ["video"])
    with pytest.raises(MediaInputError, match="^song: the file has no video stream"):
        processing.process([_silent_mp4_audio_only()], ["song"], ["video"])


def _silent_mp4_audio_only() -> bytes:
    """An MP4 holding one second of silence and no picture."""
    import av
    import numpy as np

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for _ in range(16):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def test_qwen2_5_vl_takes_pictures_and_spaces_video_time_by_the_real_frame_interval(tiny_model):
    """Qwen2.5-VL places video patches in time by seconds per temporal patch: 4 s sampled as only
    4 frames (video_maxlen) makes each of the 2 patches span 2 s, and generate given that interval agrees."""
    model, tokenizer, processing = load_tiny(tiny_model("qwen2_5_vl"), video_maxlen=4)
    assert isinstance(processing, VisionProcessing) and processing.kinds == {"image", "video"}
    engine = HuggingFaceEngine(model, tokenizer, context_length=4096, media=processing)
    picture_ids, picture = image_prompt(tokenizer, processing, png((90, 200, 40)))
    video = processing.process([mp4([(200, 30, 30), (30, 200, 30)] * 20)], kinds=["video"])
    prompt = PROMPT.replace("image_pad", "video_pad").format(text="What happens?")
    video_ids = processing.expand(tokenizer(prompt)["input_ids"], video)
    assert video.tensors["second_per_grid_ts"].tolist() == [2.0]
    assert video.tensors["video_grid_thw"][0, 0].item() == 2

    async def run():
        await engine.start()
        options = SamplingOptions(max_new_tokens=8, temperature=0)
        out = await asyncio.gather(
            collect(engine, picture_ids, options, picture), collect(engine, video_ids, options, video)
        )
        await engine.close()
        return out

    (picture_text, _), (video_text, _) = asyncio.run(run())
    assert picture_text == reference(model, tokenizer, processing, picture_ids, picture, 8)
    tensor = torch.tensor([video_ids])
    expected = model.generate(
        input_ids=tensor,
        attention_mask=torch.ones_like(tensor),
        mm_token_type_ids=processing.token_types(tensor),
        max_new_tokens=8,
        do_sample=False,
        **video.tensors,
    )
    assert video_text == tokenizer.decode(expected[0, len(video_ids) :], skip_special_tokens=True)
