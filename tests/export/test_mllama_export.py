"""`lmforge export` of Llama 3.2 Vision with a merged LoRA adapter: it loads in plain transformers
as the image-text model, its image processor comes along, and it computes what base + adapter does."""

from __future__ import annotations

import subprocess
import sys

import torch
import yaml


def test_a_merged_mllama_export_loads_in_plain_transformers_with_its_processor(tiny_model, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer, MllamaProcessor

    source = tiny_model("mllama")
    base = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32)
    torch.manual_seed(0)
    # the language model's self- and cross-attention projections (the towers stay as they are)
    lora = LoraConfig(r=4, target_modules=r".*language_model.*\.(q_proj|v_proj)", init_lora_weights=False)
    adapter = tmp_path / "adapter"
    get_peft_model(base, lora).save_pretrained(adapter)

    target = tmp_path / "merged"
    settings = {
        "model_name_or_path": str(source),
        "adapter_name_or_path": str(adapter),
        "template": "mllama",
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
    assert (target / "preprocessor_config.json").is_file()

    processor = MllamaProcessor(
        AutoImageProcessor.from_pretrained(target), AutoTokenizer.from_pretrained(target)
    )
    inputs = processor(
        text="<|image|>Describe it.", images=[[Image.new("RGB", (90, 60), (9, 99, 199))]], return_tensors="pt"
    )
    exported = AutoModelForImageTextToText.from_pretrained(target, dtype=torch.float32).eval()
    assert type(exported).__name__ == "MllamaForConditionalGeneration"
    reference = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32), adapter
    ).eval()
    plain = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32).eval()
    with torch.no_grad():
        merged_logits = exported(**inputs).logits
        torch.testing.assert_close(merged_logits, reference(**inputs).logits, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(merged_logits, plain(**inputs).logits, atol=1e-3)
