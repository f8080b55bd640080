"""Fine-tuning Llama 4 (tiny random-weight Llama4ForConditionalGeneration) on LLaMA-Factory's mllm_demo.

Each `<image>` becomes the structured token run Llama4Processor builds (tiles, separators, the
global view), with its labels ignored; the collator turns each batch's files into the tiles'
pixel values. The reference is transformers' Llama4Processor fed the same conversation and
pictures (its image processor needs torchvision, absent here: lmforge's tiler stands in for it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from PIL import Image

from lmforge.config import build_config
from lmforge.data import load_sft_datasets
from lmforge.data.batching import TrainingCollator
from lmforge.errors import ConfigError
from lmforge.model.loader import load_tokenizer
from lmforge.templates import resolve_template
from lmforge.train.workflow import training_media
from tests.helpers.cli import lmforge
from tests.media.test_llama4 import official_processor
from tests.train.test_multimodal import IGNORE, encoded


def settings(model: Path, data: Path, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "model_name_or_path": str(model),
        "template": "llama4",
        "dataset": "mllm_demo",
        "dataset_dir": str(data),
        "cutoff_len": 1024,
        "output_dir": str(tmp_path / "out"),
        "overwrite_cache": True,
        **extra,
    }


def official_sample(processor, row: dict[str, Any], folder: Path) -> dict[str, torch.Tensor]:
    """What Llama4Processor builds from one mllm_demo record (`<image>` -> an image part)."""
    messages = []
    for message in row["messages"]:
        parts: list[dict[str, str]] = []
        for i, text in enumerate(message["content"].split("<image>")):
            if i:
                parts.append({"type": "image"})
            if text:
                parts.append({"type": "text", "text": text})
        messages.append({"role": message["role"], "content": parts})
    text = processor.apply_chat_template(messages, tokenize=False)
    pictures = [Image.open(folder / path) for path in row["images"]]
    return processor(text=text, images=pictures, return_tensors="pt")


def test_encoded_samples_and_batches_equal_what_llama4_processor_builds(tiny_model, shared_data, tmp_path):
    path = tiny_model("llama4")
    _, tokenizer, media, bundle = encoded(settings(path, shared_data, tmp_path))
    assert bundle.report.datasets[0].samples == 6 and not bundle.report.datasets[0].dropped
    processor = official_processor(str(path), media)
    rows = json.loads((shared_data / "mllm_demo.json").read_text(encoding="utf-8"))
    collator = TrainingCollator(pad_token_id=tokenizer.pad_token_id, media=media)
    for index in (0, 1):  # two pictures (the same file twice), then one
        sample = bundle.train[index]
        expected = official_sample(processor, rows[index], shared_data)
        assert sample["input_ids"] == expected["input_ids"][0].tolist()
        batch = collator([sample])
        assert torch.equal(batch["pixel_values"], expected["pixel_values"].float())
        runs = {media.placeholders["image"], *media.run_token_ids.values()}
        assert all(
            label == IGNORE
            for token, label in zip(sample["input_ids"], sample["labels"], strict=True)
            if token in runs
        )
    trained = tokenizer.decode(
        [t for t, label in zip(sample["input_ids"], sample["labels"], strict=True) if label != IGNORE]
    )
    assert (
        trained
        == "He's Thomas Muller from Bayern Munich.<|eot|>Because he's sliding on his knees to celebrate.<|eot|>"
    )


def test_the_loss_sees_the_pictures(tiny_model, shared_data, tmp_path):
    from transformers import AutoConfig

    from lmforge.model.loader import auto_model_class

    path = tiny_model("llama4")
    _, tokenizer, media, bundle = encoded(settings(path, shared_data, tmp_path))
    batch = TrainingCollator(pad_token_id=tokenizer.pad_token_id, media=media)(
        [bundle.train[0], bundle.train[2]]
    )
    model = auto_model_class(AutoConfig.from_pretrained(path)).from_pretrained(path).eval()
    with torch.no_grad():
        loss = model(**batch).loss
        dark = model(**{**batch, "pixel_values": torch.zeros_like(batch["pixel_values"])}).loss
    assert torch.isfinite(loss) and not torch.isclose(loss, dark)


def test_lmforge_train_lowers_the_loss_on_mllm_demo_with_the_towers_frozen(tiny_model, shared_data, tmp_path):
    values = settings(
        tiny_model("llama4"),
        shared_data,
        tmp_path,
        stage="sft",
        finetuning_type="lora",
        lora_target="all",
        lora_rank=8,
        per_device_train_batch_size=2,
        learning_rate=5e-3,
        num_train_epochs=4,
        logging_steps=1,
        save_steps=100,
        report_to="none",
    )
    cfg = tmp_path / "llama4.yaml"
    cfg.write_text(yaml.safe_dump(values), encoding="utf-8")
    done = lmforge(["train", str(cfg)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    adapter = json.loads((out / "adapter_config.json").read_text())
    excluded = adapter["exclude_modules"]  # freeze_vision_tower, freeze_multi_modal_projector; the router
    assert "vision_model" in excluded and "multi_modal_projector" in excluded and "router" in excluded
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and not any(".vision_model." in n or ".multi_modal_projector." in n for n in weights)
    losses = [
        json.loads(line)["loss"]
        for line in (out / "trainer_log.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]
    assert len(losses) == 12
    assert sum(losses[-3:]) < sum(losses[:3])  # the last epoch's loss is below the first one's


@pytest.mark.parametrize("dataset,column", [("mllm_video_demo", "videos"), ("mllm_audio_demo", "audios")])
def test_a_dataset_with_video_or_sound_is_refused_naming_its_column(
    tiny_model, shared_data, tmp_path, dataset, column
):
    config = build_config(settings(tiny_model("llama4"), shared_data, tmp_path, dataset=dataset))
    tokenizer = load_tokenizer(config.model)
    template = resolve_template(config.data.template, tokenizer)
    with pytest.raises(
        ConfigError, match=f"dataset '{dataset}' has the {column} column '{column}'"
    ) as refused:
        load_sft_datasets(config, tokenizer, template, "sft", media=training_media(config), packing=False)
    assert "\n" not in str(refused.value) and "takes image only" in str(refused.value)


@pytest.mark.parametrize("finetuning_type", ["lora", "full"])
def test_the_towers_are_frozen_unless_the_config_unfreezes_them(tiny_model, finetuning_type):
    from transformers import AutoConfig

    from lmforge.model.adapter import prepare_trainable
    from lmforge.model.loader import auto_model_class

    path = tiny_model("llama4")

    def trainable(part: str, **keys: Any) -> int:
        config = build_config({"model_name_or_path": str(path), "finetuning_type": finetuning_type, **keys})
        model = auto_model_class(AutoConfig.from_pretrained(path)).from_pretrained(path)
        model = prepare_trainable(model, config.model, config.finetuning)
        return sum(
            p.numel() for n, p in model.named_parameters() if p.requires_grad and f".{part}." in f".{n}"
        )

    assert trainable("vision_model") == 0 and trainable("multi_modal_projector") == 0
    assert trainable("vision_model", freeze_vision_tower=False) > 0
    assert trainable("multi_modal_projector", freeze_multi_modal_projector=False) > 0
