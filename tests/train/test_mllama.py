"""Fine-tuning Llama 3.2 Vision (tiny random-weight Mllama) on LLaMA-Factory's mllm_demo pictures.

Each ``<image>`` stays one ``<|image|>`` token (the pictures are read through cross-attention),
the collator builds pixel values, aspect ratios and the cross-attention mask for each padded
batch exactly as ``MllamaProcessor`` does, and a LoRA run with the towers frozen lowers the loss.
"""

from __future__ import annotations

import json
import re
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

IMAGE = 128256  # <|image|>, as in the real model


def settings(model: Path, data: Path, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "model_name_or_path": str(model),
        "template": "mllama",
        "dataset": "mllm_demo",
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
    return tokenizer, media, load_sft_datasets(config, tokenizer, template, "sft", media=media, packing=False)


def test_the_collated_batch_equals_mllama_processors_and_the_loss_sees_the_pictures(
    tiny_model, shared_data, tmp_path
):
    from transformers import AutoConfig, MllamaProcessor

    from lmforge.model.loader import auto_model_class

    path = tiny_model("mllama")
    tokenizer, media, bundle = encoded(settings(path, shared_data, tmp_path))
    rows = [bundle.train[i] for i in range(3)]
    for row in rows:
        assert row["input_ids"].count(IMAGE) == len(row["media"])  # one token per picture, not repeated
        assert all(
            label == -100 for t, label in zip(row["input_ids"], row["labels"], strict=True) if t == IMAGE
        )
    assert sorted(len(row["media"]) for row in rows) != [len(rows[0]["media"])] * 3  # unequal picture counts
    pad = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    batch = TrainingCollator(pad_token_id=pad, media=media)(rows)

    tokenizer.pad_token = "<|eot_id|>"
    reference = MllamaProcessor(media.image_processor, tokenizer)(
        text=[tokenizer.decode(row["input_ids"]) for row in rows],
        images=[[Image.open(ref.partition(":")[2]).convert("RGB") for ref in row["media"]] for row in rows],
        add_special_tokens=False,
        padding=True,
        return_tensors="pt",
    )
    assert torch.equal(batch["input_ids"], reference["input_ids"])
    assert torch.equal(batch["attention_mask"], reference["attention_mask"])
    for key in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask"):
        assert torch.equal(batch[key], reference[key].to(batch[key].dtype)), key
    real = batch["attention_mask"].bool()  # padding tokens attend to nothing that is trained
    assert torch.equal(batch["cross_attention_mask"][real], reference["cross_attention_mask"][real])

    model = auto_model_class(AutoConfig.from_pretrained(path)).from_pretrained(path).eval()
    with torch.no_grad():
        loss = model(**batch).loss
        dark = model(**{**batch, "pixel_values": torch.zeros_like(batch["pixel_values"])}).loss
    assert torch.isfinite(loss) and not torch.isclose(loss, dark)
    from lmforge.model.loss import enable_chunked_loss  # what training uses: it must pass the pictures on

    assert enable_chunked_loss(model)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).loss, loss)


def test_a_text_row_beside_picture_rows_collates_and_a_text_batch_has_no_pictures(
    tiny_model, shared_data, tmp_path
):
    tokenizer, media, bundle = encoded(settings(tiny_model("mllama"), shared_data, tmp_path))
    text_row = {"input_ids": [128000, 9906, 0], "labels": [-100, 9906, 0], "media": []}
    collate = TrainingCollator(pad_token_id=0, media=media)
    batch = collate([bundle.train[1], text_row])
    assert batch["pixel_values"].shape[:3] == (2, len(bundle.train[1]["media"]), 2)
    assert int(batch["cross_attention_mask"][1].sum()) == 0 and int(batch["aspect_ratio_ids"][1].sum()) == 0
    assert "pixel_values" not in collate([text_row])


@pytest.mark.parametrize(
    ("dataset", "column"), [("mllm_video_demo", "videos"), ("mllm_audio_demo", "audios")]
)
def test_datasets_with_media_mllama_cannot_take_are_refused_naming_the_column(
    tiny_model, shared_data, tmp_path, dataset, column
):
    with pytest.raises(ConfigError) as info:
        encoded(settings(tiny_model("mllama"), shared_data, tmp_path, dataset=dataset))
    message = str(info.value)
    assert "\n" not in message
    assert (
        f"dataset '{dataset}' has the {column} column '{column}', but the model takes image only" in message
    )


def test_lmforge_train_lora_on_mllm_demo_lowers_the_loss_with_the_towers_frozen(
    tiny_model, shared_data, tmp_path
):
    values = settings(
        tiny_model("mllama"),
        shared_data,
        tmp_path,
        stage="sft",
        finetuning_type="lora",
        lora_target="all",
        lora_rank=8,
        per_device_train_batch_size=3,
        learning_rate=5e-3,
        num_train_epochs=4,
        logging_steps=1,
        save_steps=1000,
        report_to="none",
        seed=7,
    )
    cfg = tmp_path / "mllama.yaml"
    cfg.write_text(yaml.safe_dump(values), encoding="utf-8")
    done = lmforge(["train", str(cfg)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    adapter = json.loads((out / "adapter_config.json").read_text())
    excluded = re.compile(adapter["exclude_modules"])
    for name in ("model.vision_model.transformer.layers.0.mlp.fc1", "model.multi_modal_projector"):
        assert excluded.fullmatch(name), name  # the towers, and the projector (one Linear) itself
    assert not excluded.fullmatch("model.language_model.layers.0.self_attn.q_proj")
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and not any(".vision_model." in n or "multi_modal_projector" in n for n in weights)
    assert any("cross_attn" in n for n in weights)  # the cross-attention layers of the text model train
    losses = [
        json.loads(line)["loss"]
        for line in (out / "trainer_log.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]
    assert len(losses) == 8  # 6 samples, 3 a batch, 4 epochs
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.5  # 12.6 -> 11.5 when last seen
