"""LLaMA Pro: the expanded folder loads in plain transformers and computes what the original did;
training with use_llama_pro updates only the new blocks."""

from __future__ import annotations

import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from lmforge.cli import main
from lmforge.config import build_config
from lmforge.train import PreparedData, run_training
from tests.helpers.training import encoded_samples, settings


def test_expand_then_train_only_the_new_blocks(tmp_path, tiny_model):
    source = str(tiny_model("llama"))
    expanded_dir = tmp_path / "llama-pro"
    assert main(["llama-pro", source, str(expanded_dir), "--num_expand", "2"]) == 0

    original = AutoModelForCausalLM.from_pretrained(source).eval()
    expanded = AutoModelForCausalLM.from_pretrained(expanded_dir).eval()  # plain transformers
    assert expanded.config.num_hidden_layers == 2 * original.config.num_hidden_layers
    ids = torch.tensor([encoded_samples(source, 4)[0]["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(expanded(input_ids=ids).logits, original(input_ids=ids).logits)

    out = tmp_path / "out"
    values = settings(
        str(expanded_dir),
        out,
        finetuning_type="freeze",
        use_llama_pro=True,
        freeze_trainable_layers=2,
        learning_rate=1e-2,
        max_steps=2,
        save_steps=100,
    )
    data = PreparedData(train=Dataset.from_list(encoded_samples(source, 8)))
    run_training(build_config(values), data=data)
    before = load_file(expanded_dir / "model.safetensors")
    after = load_file(out / "model.safetensors")
    changed = {name.split(".")[2] for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"1", "3"}  # the inserted blocks, nothing else


def test_num_expand_must_divide_the_layers(tmp_path, tiny_model, capsys):
    assert main(["llama-pro", str(tiny_model("llama")), str(tmp_path / "x"), "--num_expand", "3"]) == 2
    assert "divisor" in capsys.readouterr().err
