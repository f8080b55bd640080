"""`lmforge export` of LLaVA-1.5 with a merged LoRA: the folder carries LlavaProcessor's files and
loads in plain transformers, computing what base + adapter computes on a picture."""

from __future__ import annotations

import subprocess
import sys

import torch
import yaml
from PIL import Image


def test_a_merged_llava_export_loads_with_its_processor_in_plain_transformers(tiny_model, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    source = tiny_model("llava")
    base = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32)
    torch.manual_seed(0)
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=r".*language_model.*\.(q_proj|v_proj)", init_lora_weights=False
    )
    adapter = tmp_path / "adapter"
    get_peft_model(base, lora).save_pretrained(adapter)
    target = tmp_path / "llava-export"
    settings = {
        "model_name_or_path": str(source),
        "adapter_name_or_path": str(adapter),
        "template": "llava",
        "finetuning_type": "lora",
        "export_dir": str(target),
        "infer_dtype": "float32",
    }
    (tmp_path / "export.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "lmforge", "export", str(tmp_path / "export.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (target / "preprocessor_config.json").is_file() and (target / "processor_config.json").is_file()

    processor = AutoProcessor.from_pretrained(target)  # plain transformers from here on
    assert type(processor).__name__ == "LlavaProcessor"
    inputs = processor(
        text="USER: <image>Describe it. ASSISTANT:",
        images=[Image.new("RGB", (80, 60), (9, 99, 199))],
        return_tensors="pt",
    )
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == 16
    exported = AutoModelForImageTextToText.from_pretrained(target, dtype=torch.float32).eval()
    assert type(exported).__name__ == "LlavaForConditionalGeneration"
    reference = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32), adapter
    ).eval()
    plain = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32).eval()
    with torch.no_grad():
        merged = exported(**inputs).logits
        torch.testing.assert_close(merged, reference(**inputs).logits, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(merged, plain(**inputs).logits, atol=1e-3)  # the adapter is in the weights
