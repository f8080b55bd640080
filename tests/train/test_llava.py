"""Fine-tuning LLaVA-1.5 (tiny random-weight LlavaForConditionalGeneration) on LLaMA-Factory's mllm_demo.

Encoded samples and collated batches must equal what ``LlavaProcessor`` makes of the same
conversation text and pictures; the towers stay frozen by default; video and sound datasets are
refused before anything loads; and LLaMA-Factory 0.9.2's ``llava1_5_lora_sft.yaml`` trains with
only the model swapped.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from lmforge.config import build_config
from lmforge.conversation import Conversation, Message
from lmforge.data import load_sft_datasets
from lmforge.data.batching import TrainingCollator
from lmforge.errors import ConfigError
from lmforge.model.loader import load_tokenizer
from lmforge.templates import resolve_template
from lmforge.train.workflow import training_media
from tests.helpers.cli import REPO_ROOT, lmforge

IGNORE = -100


def settings(model: Path, data: Path, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "model_name_or_path": str(model),
        "template": "llava",
        "dataset": "mllm_demo",
        "dataset_dir": str(data),
        "cutoff_len": 1024,
        "output_dir": str(tmp_path / "out"),
        "overwrite_cache": True,
        **extra,
    }


def encoded(values: dict[str, Any], packing: bool | None = None):
    """(tokenizer, template, media, bundle); ``packing`` as a training run passes it (None: as an estimate)."""
    config = build_config(values)
    tokenizer = load_tokenizer(config.model)
    template = resolve_template(config.data.template, tokenizer)
    media = training_media(config)
    bundle = load_sft_datasets(config, tokenizer, template, "sft", media=media, packing=packing)
    return tokenizer, template, media, bundle


def test_samples_and_batches_equal_the_llava_processors(tiny_model, shared_data, tmp_path):
    from transformers import AutoProcessor

    path = tiny_model("llava")
    tokenizer, template, media, bundle = encoded(settings(path, shared_data, tmp_path))
    processor = AutoProcessor.from_pretrained(path)
    records = json.loads((shared_data / "mllm_demo.json").read_text(encoding="utf-8"))
    assert len(bundle.train) == len(records) == 6
    collator = TrainingCollator(pad_token_id=tokenizer.pad_token_id, media=media)
    for sample, record in zip(bundle.train, records, strict=True):
        files = [shared_data / name for name in record["images"]]
        assert sample["media"] == [f"image:{f}" for f in files]
        conv = Conversation(messages=[Message(m["role"], m["content"]) for m in record["messages"]])
        text = template.render_text(tokenizer, conv)
        pictures = [Image.open(io.BytesIO(f.read_bytes())) for f in files]
        ref = processor(text=text, images=pictures, add_special_tokens=False, return_tensors="pt")
        assert sample["input_ids"] == ref["input_ids"][0].tolist()
        assert sample["input_ids"].count(processor.image_token_id) == 16 * len(files)
        assert all(
            label == IGNORE
            for token, label in zip(sample["input_ids"], sample["labels"], strict=True)
            if token == processor.image_token_id
        )
        batch = collator([sample])
        assert batch["input_ids"][0].tolist() == sample["input_ids"] and "mm_token_type_ids" not in batch
        torch.testing.assert_close(batch["pixel_values"], ref["pixel_values"], rtol=0, atol=0)
    trained = tokenizer.decode(
        [t for t, label in zip(sample["input_ids"], sample["labels"], strict=True) if label != IGNORE]
    )
    replies = [m["content"] for m in records[-1]["messages"] if m["role"] == "assistant"]
    assert trained == " ".join(f"{reply}</s>" for reply in replies)  # each reply and its EOS, nothing else


def test_a_batch_of_two_feeds_the_model_and_the_pictures_change_the_loss(tiny_model, shared_data, tmp_path):
    from transformers import AutoConfig

    from lmforge.model.loader import auto_model_class

    path = tiny_model("llava")
    tokenizer, _, media, bundle = encoded(settings(path, shared_data, tmp_path))
    batch = TrainingCollator(pad_token_id=tokenizer.pad_token_id, media=media)(
        [bundle.train[0], bundle.train[1]]
    )
    assert batch["pixel_values"].shape == (
        len(bundle.train[0]["media"]) + len(bundle.train[1]["media"]),
        3,
        56,
        56,
    )
    model = auto_model_class(AutoConfig.from_pretrained(path)).from_pretrained(path).eval()
    with torch.no_grad():
        loss = model(**batch).loss
        dark = model(**{**batch, "pixel_values": torch.zeros_like(batch["pixel_values"])}).loss
    assert torch.isfinite(loss) and not torch.isclose(loss, dark)


@pytest.mark.parametrize(
    ("dataset", "column"),
    [("mllm_video_demo", "the videos column 'videos'"), ("mllm_audio_demo", "the audios column 'audios'")],
)
def test_video_and_sound_datasets_are_refused_naming_the_column(
    tiny_model, shared_data, tmp_path, dataset, column
):
    with pytest.raises(ConfigError) as info:
        encoded(settings(tiny_model("llava"), shared_data, tmp_path, dataset=dataset), packing=False)
    message = str(info.value)
    assert f"dataset '{dataset}' has {column}, but the model takes image only" in message
    assert "\n" not in message


def test_the_cli_refuses_a_video_dataset_in_one_line(tiny_model, shared_data, tmp_path):
    values = settings(tiny_model("llava"), shared_data, tmp_path, dataset="mllm_video_demo", stage="sft")
    done = lmforge(["train", *(f"{k}={v}" for k, v in values.items())], tmp_path)
    errors = [line for line in done.stderr.splitlines() if line.startswith("lmforge train: error")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-2000:]
    assert "the videos column 'videos'" in errors[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize("finetuning_type", ["lora", "full"])
def test_the_tower_and_projector_train_only_when_unfrozen(tiny_model, finetuning_type):
    from transformers import AutoConfig

    from lmforge.model.adapter import prepare_trainable
    from lmforge.model.loader import auto_model_class

    path = tiny_model("llava")

    def trainable(**keys: Any) -> dict[str, int]:
        config = build_config({"model_name_or_path": str(path), "finetuning_type": finetuning_type, **keys})
        model = auto_model_class(AutoConfig.from_pretrained(path)).from_pretrained(path)
        model = prepare_trainable(model, config.model, config.finetuning)
        counts = {"vision_tower": 0, "multi_modal_projector": 0, "language_model": 0}
        for name, p in model.named_parameters():
            for part in counts:
                if p.requires_grad and f".{part}." in f".{name}":
                    counts[part] += p.numel()
        return counts

    default = trainable()
    assert default["vision_tower"] == default["multi_modal_projector"] == 0 and default["language_model"] > 0
    unfrozen = trainable(freeze_vision_tower=False, freeze_multi_modal_projector=False)
    assert unfrozen["vision_tower"] > 0 and unfrozen["multi_modal_projector"] > 0


@pytest.mark.slow
def test_llamafactorys_llava1_5_lora_sft_trains_with_only_the_model_swapped(
    tiny_model, shared_data, tmp_path
):
    """LLaMA-Factory 0.9.2's examples/train_lora/llava1_5_lora_sft.yaml (bf16, 16 preprocessing and 4
    loader workers, cosine with warmup, 3 epochs of mllm_demo); logging_steps=1 only so that every
    step's loss is in the log."""
    from safetensors.torch import load_file

    (tmp_path / "data").symlink_to(shared_data, target_is_directory=True)  # LLaMA-Factory's data/
    config = REPO_ROOT / "tests" / "configs" / "llamafactory_llava1_5_lora_sft.yaml"
    done = lmforge(
        ["train", str(config), f"model_name_or_path={tiny_model('llava')}", "logging_steps=1"], tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "6 samples from 6 records" in done.stderr and "special-token text" not in done.stderr
    out = tmp_path / "saves" / "llava1_5-7b" / "lora" / "sft"
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in log if "loss" in row]
    assert len(losses) == 3 and losses[-1] < losses[0]
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert (
        "vision_tower" in adapter["exclude_modules"] and "multi_modal_projector" in adapter["exclude_modules"]
    )
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and all(".language_model." in name for name in weights)
