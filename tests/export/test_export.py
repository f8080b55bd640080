"""`lmforge export`: the merged folder computes what base + adapter computes, in plain transformers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer


@pytest.fixture(scope="module")
def lora_adapter(tiny_model, tmp_path_factory):
    """A LoRA adapter made with peft on the tiny model, with non-zero B so it changes the output."""
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model("llama"))
    torch.manual_seed(0)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    model = get_peft_model(base, config)
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder)
    return folder


def run_export(tmp_path, settings):
    cfg = tmp_path / "export.yaml"
    cfg.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "lmforge", "export", str(cfg)], capture_output=True, text=True, timeout=300
    )


def test_merged_export_matches_base_plus_adapter(tiny_model, lora_adapter, tmp_path):
    from peft import PeftModel

    from lmforge.conversation import Conversation
    from lmforge.templates import get_template

    out = tmp_path / "merged"
    result = run_export(
        tmp_path,
        {
            "model_name_or_path": str(tiny_model("llama")),
            "adapter_name_or_path": str(lora_adapter),
            "template": "qwen",
            "export_dir": str(out),
            "export_size": 1,
        },
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert any(n.endswith(".safetensors") for n in names) and not any(n.endswith(".bin") for n in names)
    assert not any(p.name.startswith(".merged") for p in tmp_path.iterdir())  # no staging folder left

    ids = torch.tensor([[1, 17, 420, 9001, 31, 5]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model("llama"))
    plain = base(ids).logits
    reference = PeftModel.from_pretrained(base, lora_adapter).eval()
    with torch.no_grad():
        expected = reference(ids).logits
    merged = AutoModelForCausalLM.from_pretrained(out).eval()  # plain transformers, no peft, no lmforge
    with torch.no_grad():
        got = merged(ids).logits
    assert not torch.allclose(plain, expected, atol=1e-3)  # the adapter really changes the model
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    # the saved tokenizer chats with the template the model was trained with
    tokenizer = AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    conv = Conversation.from_openai({"messages": messages})
    assert text == get_template("qwen").render_text(tokenizer, conv)
    eos = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    eos = eos if isinstance(eos, list) else [eos]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in eos


def test_export_replaces_an_older_export_and_needs_export_dir(tiny_model, tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    ok = run_export(tmp_path, {"model_name_or_path": str(tiny_model("llama")), "export_dir": str(out)})
    assert ok.returncode == 0, ok.stderr
    assert not (out / "stale.txt").exists() and (out / "config.json").is_file()
    missing = run_export(tmp_path, {"model_name_or_path": str(tiny_model("llama"))})
    assert missing.returncode == 2
    assert "export_dir" in missing.stderr and "Traceback" not in missing.stderr


def test_a_vision_language_export_keeps_its_image_processor(tiny_model, tmp_path):
    """Qwen2-VL exports as an image-text model with its preprocessor config, loadable without lmforge."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageTextToText

    source = tiny_model("qwen2_vl")
    target = tmp_path / "vl-export"
    result = run_export(
        tmp_path,
        {
            "model_name_or_path": str(source),
            "template": "qwen2_vl",
            "export_dir": str(target),
            "infer_dtype": "float32",
        },
    )
    assert result.returncode == 0, result.stderr
    assert (target / "preprocessor_config.json").is_file()
    processor = AutoImageProcessor.from_pretrained(target)
    pixels = processor(images=[Image.new("RGB", (56, 56), (9, 99, 199))], return_tensors="pt")
    exported = AutoModelForImageTextToText.from_pretrained(target, dtype=torch.float32)
    base = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(target)
    ids = tokenizer(
        "<|vision_start|>" + "<|image_pad|>" * 4 + "<|vision_end|>Describe it.", return_tensors="pt"
    )
    types = (ids["input_ids"] == exported.config.image_token_id).int()
    with torch.no_grad():
        a = exported(**ids, **pixels, mm_token_type_ids=types).logits
        b = base(**ids, **pixels, mm_token_type_ids=types).logits
    torch.testing.assert_close(a, b)
