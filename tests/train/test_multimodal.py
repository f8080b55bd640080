"""Fine-tuning multimodal models (tiny random-weight Qwen2-VL and Qwen2-Audio) on samples with media.

Each `<image>` / `<audio>` placeholder is expanded to the processor's token count at encoding
time (the same count the server uses), the collator turns each batch's files into pixel or
audio features, and the loss sees them. Towers stay frozen by default, as in LLaMA-Factory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from lmforge.config import build_config
from lmforge.data import load_sft_datasets
from lmforge.data.batching import TrainingCollator
from lmforge.model.loader import load_tokenizer
from lmforge.templates import resolve_template
from lmforge.train.workflow import training_media
from tests.helpers.cli import lmforge
from tests.helpers.media import png, wav

IGNORE = -100


def write_vision_data(folder: Path) -> Path:
    """A sharegpt dataset in LLaMA-Factory's mllm_demo shape: `<image>` in the text, paths beside it."""
    (folder / "pics").mkdir(parents=True, exist_ok=True)
    (folder / "pics" / "red.png").write_bytes(png((220, 30, 30), (90, 60)))
    (folder / "pics" / "blue.png").write_bytes(png((30, 30, 220), (56, 56)))
    rows = [
        {
            "messages": [
                {"role": "user", "content": "<image>What colour is this?"},
                {"role": "assistant", "content": "It is red."},
                {"role": "user", "content": "And this one?<image>"},
                {"role": "assistant", "content": "That one is blue."},
            ],
            "images": ["pics/red.png", "pics/blue.png"],
        },
        {
            "messages": [
                {"role": "user", "content": "<image>Describe it."},
                {"role": "assistant", "content": "A blue square."},
            ],
            "images": ["pics/blue.png"],
        },
        {
            "messages": [
                {"role": "user", "content": "<image>What is here?"},
                {"role": "assistant", "content": "Nothing I can see."},
            ],
            "images": ["pics/missing.png"],
        },
    ]
    (folder / "pictures.json").write_text(json.dumps(rows), encoding="utf-8")
    info = {
        "pictures": {
            "file_name": "pictures.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
            },
        }
    }
    (folder / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return folder


def settings(model: Path, data: Path, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "model_name_or_path": str(model),
        "template": "qwen2_vl",
        "dataset": "pictures",
        "dataset_dir": str(data),
        "cutoff_len": 512,
        "output_dir": str(tmp_path / "out"),
        "overwrite_cache": True,
        **extra,
    }


def encoded(values: dict[str, Any]):
    config = build_config(values)
    tokenizer = load_tokenizer(config.model)
    template = resolve_template(config.data.template, tokenizer)
    media = training_media(config)
    return config, tokenizer, media, load_sft_datasets(config, tokenizer, template, "sft", media=media)


def test_placeholders_expand_to_the_processors_counts_and_bad_media_are_counted(tiny_model, tmp_path):
    data = write_vision_data(tmp_path / "data")
    _, tokenizer, media, bundle = encoded(settings(tiny_model("qwen2_vl"), data, tmp_path))
    report = bundle.report.datasets[0]
    assert report.samples == 2 and report.dropped == {"unreadable media": 1}
    assert "missing.png" in report.first_dropped["unreadable media"]
    first = bundle.train.filter(lambda row: len(row["media"]) == 2)[0]
    pad = media.placeholders["image"]
    # 90x60 -> 56x84 -> 4x6 patches -> 6 tokens; 56x56 -> 4x4 patches -> 4 tokens
    assert first["input_ids"].count(pad) == 6 + 4
    assert first["media"] == [f"image:{data / 'pics' / 'red.png'}", f"image:{data / 'pics' / 'blue.png'}"]
    assert all(
        label == IGNORE
        for token, label in zip(first["input_ids"], first["labels"], strict=True)
        if token == pad
    )
    trained = tokenizer.decode(
        [t for t, label in zip(first["input_ids"], first["labels"], strict=True) if label != IGNORE]
    )
    assert trained == "It is red.<|im_end|>That one is blue.<|im_end|>"


def test_a_cutoff_that_would_cut_an_image_drops_the_sample(tiny_model, tmp_path):
    data = write_vision_data(tmp_path / "data")
    # the first sample's second picture starts after its first reply; 40 tokens keep the reply, not the picture
    _, _, _, bundle = encoded(settings(tiny_model("qwen2_vl"), data, tmp_path, cutoff_len=40))
    report = bundle.report.datasets[0]
    assert report.dropped.get("media cut by cutoff_len") == 1
    assert "raise cutoff_len or lower image_max_pixels" in report.first_dropped["media cut by cutoff_len"]


def test_the_collated_batch_carries_the_pictures_and_the_loss_sees_them(tiny_model, tmp_path):
    from lmforge.model.loader import auto_model_class

    data = write_vision_data(tmp_path / "data")
    path = tiny_model("qwen2_vl")
    _, tokenizer, media, bundle = encoded(settings(path, data, tmp_path))
    collator = TrainingCollator(pad_token_id=tokenizer.pad_token_id, media=media)
    batch = collator([bundle.train[0], bundle.train[1]])
    grids = batch["image_grid_thw"]
    assert grids.shape[0] == sum(len(row["media"]) for row in (bundle.train[0], bundle.train[1]))
    assert batch["pixel_values"].shape[0] == int(grids.prod(-1).sum())
    assert torch.equal(batch["mm_token_type_ids"], (batch["input_ids"] == media.placeholders["image"]).int())
    from transformers import AutoConfig

    model = auto_model_class(AutoConfig.from_pretrained(path)).from_pretrained(path).eval()
    with torch.no_grad():
        loss = model(**batch).loss
        dark = model(**{**batch, "pixel_values": torch.zeros_like(batch["pixel_values"])}).loss
    assert torch.isfinite(loss) and not torch.isclose(loss, dark)
    from lmforge.model.loss import enable_chunked_loss  # what training uses: it must pass the pictures on

    assert enable_chunked_loss(model)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).loss, loss)


def test_audio_clips_expand_and_collate_for_qwen2_audio(tiny_model, tmp_path):
    folder = tmp_path / "sounds"
    folder.mkdir()
    (folder / "a.wav").write_bytes(wav(440, 1.0))
    rows = [
        {
            "messages": [
                {"role": "user", "content": "<audio>What do you hear?"},
                {"role": "assistant", "content": "A steady tone."},
            ],
            "audios": ["a.wav"],
        }
    ]
    (folder / "tones.json").write_text(json.dumps(rows), encoding="utf-8")
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    info = {
        "tones": {
            "file_name": "tones.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "audios": "audios"},
            "tags": tags,
        }
    }
    (folder / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    values = settings(tiny_model("qwen2_audio"), folder, tmp_path, template="qwen2_audio", dataset="tones")
    _, tokenizer, media, bundle = encoded(values)
    sample = bundle.train[0]
    assert sample["input_ids"].count(media.placeholders["audio"]) == 25  # one second of sound
    batch = TrainingCollator(pad_token_id=tokenizer.pad_token_id, media=media)([sample])
    assert (
        batch["input_features"].shape == (1, 128, 3000) and int(batch["feature_attention_mask"].sum()) == 100
    )


def test_lmforge_train_fine_tunes_qwen2_vl_on_pictures_with_the_towers_frozen(tiny_model, tmp_path):
    data = write_vision_data(tmp_path / "data")
    values = settings(
        tiny_model("qwen2_vl"),
        data,
        tmp_path,
        stage="sft",
        finetuning_type="lora",
        lora_target="all",
        lora_rank=4,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        max_steps=3,
        logging_steps=1,
        save_steps=100,
        report_to="none",
    )
    cfg = tmp_path / "vl.yaml"
    cfg.write_text(yaml.safe_dump(values), encoding="utf-8")
    done = lmforge(["train", str(cfg)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dropped 1 records (1 unreadable media)" in done.stderr
    out = tmp_path / "out"
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert "visual" in adapter["exclude_modules"]  # freeze_vision_tower (LLaMA-Factory's default)
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and not any(".visual." in name for name in weights)
    losses = [
        json.loads(line)["loss"]
        for line in (out / "trainer_log.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]
    assert len(losses) == 3 and all(np.isfinite(losses))

    values["packing"] = True
    cfg.write_text(yaml.safe_dump({**values, "output_dir": str(tmp_path / "packed")}), encoding="utf-8")
    refused = lmforge(["train", str(cfg)], tmp_path)
    assert (
        refused.returncode == 2
        and "packing cannot hold media samples yet (dataset 'pictures' has images)" in refused.stderr
    )


def test_a_vision_model_still_trains_on_text_only_data(tiny_model, tmp_path):
    """A VL model trains on text-only data as before: no media column work, no pictures."""
    folder = tmp_path / "text"
    folder.mkdir()
    rows = [{"instruction": "Say hi.", "input": "", "output": "Hi."}]
    (folder / "hi.json").write_text(json.dumps(rows), encoding="utf-8")
    (folder / "dataset_info.json").write_text(json.dumps({"hi": {"file_name": "hi.json"}}), encoding="utf-8")
    _, tokenizer, media, bundle = encoded(settings(tiny_model("qwen2_vl"), folder, tmp_path, dataset="hi"))
    batch = TrainingCollator(pad_token_id=tokenizer.pad_token_id, media=media)([bundle.train[0]])
    assert bundle.train[0]["media"] == [] and "pixel_values" not in batch


@pytest.mark.parametrize("finetuning_type", ["lora", "full"])
def test_towers_train_only_when_the_config_unfreezes_them(tiny_model, finetuning_type):
    from transformers import AutoConfig

    from lmforge.model.adapter import prepare_trainable
    from lmforge.model.loader import auto_model_class

    path = tiny_model("qwen2_vl")

    def trainable_tower_params(**keys: Any) -> int:
        config = build_config({"model_name_or_path": str(path), "finetuning_type": finetuning_type, **keys})
        model = auto_model_class(AutoConfig.from_pretrained(path)).from_pretrained(path)
        model = prepare_trainable(model, config.model, config.finetuning)
        return sum(
            p.numel() for n, p in model.named_parameters() if p.requires_grad and ".visual." in f".{n}"
        )

    assert (
        trainable_tower_params() == 0
    )  # freeze_vision_tower and freeze_multi_modal_projector default to true
    assert trainable_tower_params(freeze_vision_tower=False, freeze_multi_modal_projector=False) > 0


def test_streaming_refuses_media_but_streams_text_for_a_vision_model(tiny_model, tmp_path):
    from lmforge.errors import ConfigError

    data = write_vision_data(tmp_path / "data")
    with pytest.raises(
        ConfigError, match="streaming: true reads text only, and dataset 'pictures' has media"
    ):
        encoded(settings(tiny_model("qwen2_vl"), data, tmp_path, streaming=True, max_steps=2))
    folder = tmp_path / "text"
    folder.mkdir()
    (folder / "hi.json").write_text(
        json.dumps([{"instruction": "Say hi.", "output": "Hi."}]), encoding="utf-8"
    )
    (folder / "dataset_info.json").write_text(json.dumps({"hi": {"file_name": "hi.json"}}), encoding="utf-8")
    _, _, _, bundle = encoded(
        settings(tiny_model("qwen2_vl"), folder, tmp_path, dataset="hi", streaming=True)
    )
    assert next(iter(bundle.train))["input_ids"]
