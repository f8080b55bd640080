"""`lmforge export` of Llama 4 with a LoRA adapter: the merged folder keeps the processor files and,
loaded in plain transformers, computes on a picture what base + adapter computes.

(transformers' Llama4ImageProcessor needs torchvision, absent here, so the pixel values come
from lmforge's tiler, the exact values the official processor's steps give.)
"""

from __future__ import annotations

import json

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer

from lmforge.config.model import ModelArguments
from lmforge.media.models import media_processing_for
from tests.export.test_export import run_export
from tests.helpers.media import png


def test_a_merged_llama4_export_loads_in_transformers_and_sees_the_picture(tiny_model, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    source = str(tiny_model("llama4"))
    torch.manual_seed(0)
    base = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)", init_lora_weights=False
    )
    get_peft_model(base, lora).save_pretrained(tmp_path / "adapter")

    target = tmp_path / "llama4-export"
    settings = {
        "model_name_or_path": source,
        "adapter_name_or_path": str(tmp_path / "adapter"),
        "template": "llama4",
        "finetuning_type": "lora",
        "export_dir": str(target),
        "infer_dtype": "float32",
    }
    result = run_export(tmp_path, settings)
    assert result.returncode == 0, result.stderr
    saved = json.loads((target / "preprocessor_config.json").read_text(encoding="utf-8"))
    assert saved["image_processor_type"] == "Llama4ImageProcessor" and saved["size"] == {
        "height": 56,
        "width": 56,
    }
    assert "<|header_start|>" in AutoTokenizer.from_pretrained(target).chat_template

    config = AutoConfig.from_pretrained(target)
    media = media_processing_for(config, str(target), ModelArguments())
    assert media is not None
    tokenizer = AutoTokenizer.from_pretrained(target)
    inputs = media.process([png((200, 40, 40))])
    prompt = tokenizer("<|begin_of_text|><|image|>Describe it.", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([media.expand(prompt, inputs)])
    exported = AutoModelForImageTextToText.from_pretrained(target, dtype=torch.float32).eval()
    reference = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32), tmp_path / "adapter"
    ).eval()
    plain = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32).eval()
    with torch.no_grad():
        merged = exported(input_ids=ids, pixel_values=inputs.tensors["pixel_values"]).logits
        expected = reference(input_ids=ids, pixel_values=inputs.tensors["pixel_values"]).logits
        untrained = plain(input_ids=ids, pixel_values=inputs.tensors["pixel_values"]).logits
    torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(merged, untrained, atol=1e-3)  # the adapter was merged in
