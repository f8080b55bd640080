"""Fine-tuning Qwen2.5-Omni's thinker (tiny random-weight) on LLaMA-Factory's demo media datasets.

The encoded sample and the collated batch must equal what Qwen2_5OmniProcessor builds from the
same conversation (rendered by the template's chat template) and the same media; a LoRA run
on mllm_demo lowers the loss with the towers frozen; the audio, video and video-with-sound
(use_audio_in_video) demos train.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lmforge.data.batching import TrainingCollator
from lmforge.templates import resolve_template
from tests.helpers.cli import lmforge
from tests.helpers.omni import official_processor
from tests.train.test_multimodal import encoded

PLACEHOLDERS = {
    "<image>": "<|vision_bos|><|IMAGE|><|vision_eos|>",
    "<video>": "<|vision_bos|><|VIDEO|><|vision_eos|>",
    "<audio>": "<|audio_bos|><|AUDIO|><|audio_eos|>",
}
SMALL_VIDEO = {"video_max_pixels": 64 * 64, "video_maxlen": 8}


def omni_settings(model: Path, data: Path, tmp_path: Path, dataset: str, **extra: Any) -> dict[str, Any]:
    return {
        "model_name_or_path": str(model),
        "template": "qwen2_omni",
        "dataset": dataset,
        "dataset_dir": str(data),
        "cutoff_len": 2048,
        "output_dir": str(tmp_path / "out"),
        "overwrite_cache": True,
        **SMALL_VIDEO,
        **extra,
    }


@pytest.mark.parametrize(
    ("dataset", "use_audio_in_video"),
    [("mllm_demo", False), ("mllm_audio_demo", False), ("mllm_video_audio_demo", True)],
)
def test_the_encoded_sample_and_batch_equal_the_official_processors(
    tiny_model, shared_data, tmp_path, dataset, use_audio_in_video
):
    path = tiny_model("qwen2_5_omni")
    values = omni_settings(path, shared_data, tmp_path, dataset, use_audio_in_video=use_audio_in_video)
    _, tokenizer, media, bundle = encoded(values)
    sample = bundle.train[0]
    batch = TrainingCollator(pad_token_id=tokenizer.pad_token_id, media=media)([sample])

    record = json.loads((shared_data / f"{dataset}.json").read_text(encoding="utf-8"))[0]
    tokenizer.chat_template = resolve_template("qwen2_omni", tokenizer).jinja_chat_template()
    text = tokenizer.apply_chat_template(record["messages"], tokenize=False)
    for placeholder, tokens in PLACEHOLDERS.items():
        if use_audio_in_video and placeholder == "<audio>":
            tokens = ""  # the official processor takes the video's sound without a placeholder of its own
        text = text.replace(placeholder, tokens)
    files = lambda kind: [shared_data / name for name in record.get(kind, [])]  # noqa: E731
    kwargs: dict[str, Any] = {}
    if files("images"):
        kwargs["images"] = [Image.open(f).convert("RGB") for f in files("images")]
    if files("audios"):
        kwargs["audio"] = [media.audio._decode(f.read_bytes(), f.name) for f in files("audios")]
    if files("videos"):
        seconds = float(batch["video_second_per_grid"][0])
        kwargs["videos"] = (batch["video_grid_thw"], batch["pixel_values_videos"])
        kwargs["fps"] = 2 / seconds
    reference = official_processor(path)(
        text=text, use_audio_in_video=use_audio_in_video, return_tensors="pt", **kwargs
    )
    assert sample["input_ids"] == reference["input_ids"][0].tolist()
    for key in ("pixel_values", "image_grid_thw", "input_features", "feature_attention_mask"):
        if key in reference:
            assert torch.equal(batch[key], reference[key]), key
    assert batch.get("use_audio_in_video", False) is use_audio_in_video
    assert "mm_token_type_ids" not in batch  # the thinker places tokens by its own rope index


def train_run(tmp_path: Path, values: dict[str, Any], name: str) -> tuple[Any, Path]:
    out = tmp_path / name
    cfg = tmp_path / f"{name}.yaml"
    settings = {
        **values,
        "output_dir": str(out),
        "stage": "sft",
        "finetuning_type": "lora",
        "lora_target": "all",
        "lora_rank": 8,
        "per_device_train_batch_size": 2,
        "logging_steps": 1,
        "save_steps": 1000,
        "report_to": "none",
    }
    cfg.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return lmforge(["train", str(cfg)], tmp_path), out


def losses_of(out: Path) -> list[float]:
    lines = (out / "trainer_log.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if '"loss"' in line]


def test_lora_on_mllm_demo_lowers_the_loss_with_the_towers_frozen(tiny_model, shared_data, tmp_path):
    values = omni_settings(
        tiny_model("qwen2_5_omni"), shared_data, tmp_path, "mllm_demo", learning_rate=5e-3, max_steps=9
    )
    done, out = train_run(tmp_path, values, "pictures")
    assert done.returncode == 0, done.stderr[-3000:]
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert "visual" in adapter["exclude_modules"] and "audio_tower" in adapter["exclude_modules"]
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and not any(".visual." in n or ".audio_tower." in n for n in weights)
    losses = losses_of(out)
    assert len(losses) == 9 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


@pytest.mark.parametrize(
    ("datasets", "use_audio_in_video"),
    [("mllm_audio_demo,mllm_video_demo", False), ("mllm_video_audio_demo", True)],
)
def test_the_sound_video_and_video_with_sound_demos_train(
    tiny_model, shared_data, tmp_path, datasets, use_audio_in_video
):
    values = omni_settings(
        tiny_model("qwen2_5_omni"),
        shared_data,
        tmp_path,
        datasets,
        use_audio_in_video=use_audio_in_video,
        learning_rate=1e-3,
        max_steps=2,
    )
    done, out = train_run(tmp_path, values, "media")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dropped" not in done.stderr
    losses = losses_of(out)
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_use_audio_in_video_refuses_videos_without_their_sound(tiny_model, shared_data, tmp_path):
    values = omni_settings(
        tiny_model("qwen2_5_omni"), shared_data, tmp_path, "mllm_video_demo", use_audio_in_video=True
    )
    from lmforge.errors import DataError

    with pytest.raises(DataError, match="no sample is left of 3 records") as info:
        encoded(values)
    assert "1 videos and 0 audio clips (write <audio> right after each <video>)" in str(info.value)


@pytest.mark.parametrize("finetuning_type", ["lora", "full"])
def test_the_towers_train_only_when_the_config_unfreezes_them(tiny_model, finetuning_type):
    """The thinker's towers sit at its root (``visual.``, ``audio_tower.``): frozen by default all the same."""
    from transformers import AutoConfig

    from lmforge.config import build_config
    from lmforge.model.adapter import prepare_trainable
    from lmforge.model.loader import auto_model_class

    path = tiny_model("qwen2_5_omni")

    def trainable(**keys: Any) -> dict[str, int]:
        config = build_config({"model_name_or_path": str(path), "finetuning_type": finetuning_type, **keys})
        model = auto_model_class(AutoConfig.from_pretrained(path)).from_pretrained(path)
        model = prepare_trainable(model, config.model, config.finetuning)
        counts = {"visual": 0, "audio_tower": 0, "model": 0}
        for name, param in model.named_parameters():
            for part in counts:
                if param.requires_grad and f".{part}." in f".{name}":
                    counts[part] += param.numel()
        return counts

    frozen = trainable()
    assert frozen["visual"] == 0 and frozen["audio_tower"] == 0 and frozen["model"] > 0
    loose = trainable(freeze_vision_tower=False)
    assert loose["visual"] > 0 and loose["audio_tower"] > 0
