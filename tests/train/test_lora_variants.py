"""PiSSA (pissa_init/pissa_iter/pissa_convert) and LoRA+ (loraplus_lr_ratio) through PEFT on a tiny Llama."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TrainerCallback

from lmforge.config import build_config
from lmforge.errors import ConfigError
from lmforge.train import PreparedData, run_training
from tests.helpers.training import encoded_samples, settings


def train(values: dict, callbacks=()) -> dict:
    data = PreparedData(train=Dataset.from_list(encoded_samples(values["model_name_or_path"], 16)))
    return run_training(build_config(values), data=data, callbacks=callbacks).metrics


def test_pissa_convert_saves_a_plain_lora_adapter_of_the_original_base(tmp_path, tiny_model):
    from peft import PeftModel

    model_dir = str(tiny_model("llama"))
    out = tmp_path / "out"
    values = settings(
        model_dir,
        out,
        pissa_init=True,
        pissa_iter=4,
        pissa_convert=True,
        max_steps=3,
        save_steps=3,
        lora_alpha=8,
    )
    train(values)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["init_lora_weights"] is True  # rank doubled, plain initialisation

    # reference by hand: W_trained = W - s*B0@A0 + s*B1@A1 (residual base plus the trained PiSSA adapter)
    initial = load_file(out / "pissa_init" / "adapter_model.safetensors")
    trained = load_file(out / "checkpoint-3" / "adapter_model.safetensors")
    scale = 8 / 4
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    weights = dict(reference.named_parameters())
    changed = 0
    with torch.no_grad():
        for key in initial:
            if ".lora_A." not in key:
                continue
            name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            b_key = key.replace(".lora_A.", ".lora_B.")
            delta = scale * (trained[b_key] @ trained[key] - initial[b_key] @ initial[key])
            weights[name] += delta
            changed += int(delta.abs().max() > 0)
    assert changed > 0

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    plain = PeftModel.from_pretrained(base, str(out)).eval()  # plain PEFT, original base model
    ids = torch.tensor([encoded_samples(model_dir, 16)[0]["input_ids"]])
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
        got = plain(input_ids=ids).logits
        untouched = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert (got - untouched).abs().max() > 1e-4  # the adapter does something


class CaptureOptimizer(TrainerCallback):
    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.groups = [(len(g["params"]), g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]


def test_loraplus_trains_b_faster_and_the_adapter_loads_in_peft(tmp_path, tiny_model):
    from peft import PeftModel

    model_dir = str(tiny_model("llama"))
    capture = CaptureOptimizer()
    metrics = train(
        settings(model_dir, tmp_path / "out", loraplus_lr_ratio=16.0, learning_rate=1e-3), [capture]
    )
    rates = {lr for count, lr in capture.groups if count}
    assert rates == {1e-3, 16e-3}
    assert metrics["global_step"] == 6
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    PeftModel.from_pretrained(base, str(tmp_path / "out"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"pissa_convert": True}, "needs pissa_init"),
        ({"loraplus_lr_ratio": 4.0, "finetuning_type": "full"}, "needs finetuning_type: lora"),
        ({"loraplus_lr_ratio": 4.0, "use_adam_mini": True}, "keep one"),
    ],
)
def test_bad_combinations_are_one_line(tmp_path, tiny_model, extra, message):
    with pytest.raises(ConfigError, match=message):
        train(settings(str(tiny_model("llama")), tmp_path / "out", **extra))
