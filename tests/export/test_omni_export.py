"""Exporting Qwen2.5-Omni's thinker (tiny random-weight): the merged model and its processor files
load in plain transformers; a full Omni folder (thinker and talker) exports its thinker."""

from __future__ import annotations

import shutil
import subprocess
import sys

import torch
import yaml
from transformers import AutoConfig, AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer

from tests.helpers.media import png


def run_export(tmp_path, settings):
    cfg = tmp_path / "export.yaml"
    cfg.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "lmforge", "export", str(cfg)], capture_output=True, text=True, timeout=300
    )


def media_batch(folder):
    """A picture and a sound clip through the exported folder's own processors, with their prompt."""
    import io

    import numpy as np
    from PIL import Image

    pixels = AutoImageProcessor.from_pretrained(folder)(
        images=[Image.open(io.BytesIO(png((200, 20, 20), (56, 56))))], return_tensors="pt"
    )
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    sound = AutoFeatureExtractor.from_pretrained(folder)(
        [tone], sampling_rate=16000, return_attention_mask=True, padding="max_length", return_tensors="pt"
    )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = "<|vision_bos|>" + "<|IMAGE|>" * 4 + "<|vision_eos|><|audio_bos|>" + "<|AUDIO|>" * 25
    ids = tokenizer(text + "<|audio_eos|>Describe both.", return_tensors="pt")
    return {
        **ids,
        **pixels,
        "input_features": sound["input_features"],
        "feature_attention_mask": sound["attention_mask"],
    }


def lora_adapter_for(path, folder):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    peft = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft.save_pretrained(folder)


def test_the_merged_thinker_and_its_processors_load_in_plain_transformers(tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    source = tiny_model("qwen2_5_omni")
    adapter = tmp_path / "adapter"
    lora_adapter_for(source, adapter)
    target = tmp_path / "omni-export"
    result = run_export(
        tmp_path,
        {
            "model_name_or_path": str(source),
            "adapter_name_or_path": str(adapter),
            "template": "qwen2_omni",
            "export_dir": str(target),
            "infer_dtype": "float32",
        },
    )
    assert result.returncode == 0, result.stderr
    assert (target / "preprocessor_config.json").is_file()
    batch = media_batch(target)
    exported = AutoModelForImageTextToText.from_pretrained(target, dtype=torch.float32).eval()
    assert type(exported).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    base = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().eval()
    with torch.no_grad():
        torch.testing.assert_close(exported(**batch).logits, merged(**batch).logits)
        plain = base.__class__.from_pretrained(source, dtype=torch.float32).eval()(**batch).logits
    assert not torch.allclose(exported(**batch).logits, plain)  # the adapter was merged in


def test_a_full_omni_folder_exports_its_thinker(tiny_model, tmp_path):
    """Qwen2_5OmniForConditionalGeneration (here without its talker weights, enable_audio_output false)
    is loaded, and its thinker is what lmforge exports, with a line saying so."""
    from transformers import (
        AutoModelForImageTextToText,
        Qwen2_5OmniConfig,
        Qwen2_5OmniForConditionalGeneration,
    )

    source = tiny_model("qwen2_5_omni")
    thinker = AutoConfig.from_pretrained(source)
    full = Qwen2_5OmniConfig(thinker_config=thinker.to_dict(), enable_audio_output=False)
    torch.manual_seed(0)
    model = Qwen2_5OmniForConditionalGeneration(full).eval()
    folder = tmp_path / "full-omni"
    model.save_pretrained(folder)
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "chat_template.jinja",
    ):
        shutil.copy(source / name, folder / name)
    assert AutoConfig.from_pretrained(folder).model_type == "qwen2_5_omni"
    target = tmp_path / "thinker-export"
    result = run_export(
        tmp_path, {"model_name_or_path": str(folder), "export_dir": str(target), "infer_dtype": "float32"}
    )
    assert result.returncode == 0, result.stderr
    assert "the talker (speech output) is out of scope" in result.stderr
    assert AutoConfig.from_pretrained(target).model_type == "qwen2_5_omni_thinker"
    exported = AutoModelForImageTextToText.from_pretrained(target, dtype=torch.float32).eval()
    batch = media_batch(target)
    with torch.no_grad():
        torch.testing.assert_close(exported(**batch).logits, model.thinker(**batch).logits)
