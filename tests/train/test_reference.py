"""The reference model rules of DPO/KTO (train/reference.py), one test each, on a tiny llama.

Every test changes the policy's trainable weights first, so that "the reference equals X"
cannot pass by the policy still being equal to X. Log-probabilities come from
``sequence_log_probs`` (chunked, one forward pass for all rows), itself checked here against
the model's full logits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from lmforge.config import build_config
from lmforge.model.adapter import prepare_trainable
from lmforge.model.loss import sequence_log_probs
from lmforge.train.preference_trainer import reference_log_probs
from lmforge.train.reference import REFERENCE_ADAPTER, build_reference


@pytest.fixture(scope="module")
def base_dir(tiny_model) -> str:
    return str(tiny_model("llama"))


def batch() -> dict[str, torch.Tensor]:
    """Two rows (say a chosen and a rejected answer), the second right-padded."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 400, (2, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    labels = ids.clone()
    labels[:, :4] = -100
    labels[1, 9:] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def logps(model: torch.nn.Module) -> torch.Tensor:
    b = batch()
    with torch.no_grad():
        return sequence_log_probs(model, b["input_ids"], b["attention_mask"], b["labels"])[0]


def load(path: str) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def perturb(model: torch.nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)


def policy_for(values: dict) -> tuple[torch.nn.Module, object]:
    config = build_config({"stage": "dpo", "lora_rank": 4, **values})
    model = load(config.model.model_name_or_path)
    model = prepare_trainable(model, config.model, config.finetuning)
    perturb(model)
    return model, config


def reference_logps(config, model) -> torch.Tensor:
    reference = build_reference(config, model, torch.float32)
    return reference_log_probs(reference, model, batch())[0], reference


def test_chunked_log_probs_equal_full_logits(base_dir: str) -> None:
    model = load(base_dir)
    b = batch()
    ours, counts = sequence_log_probs(model, b["input_ids"], b["attention_mask"], b["labels"])
    ours.sum().backward()
    grad = model.model.layers[0].mlp.down_proj.weight.grad.clone()
    model.zero_grad()
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
    targets = b["labels"][:, 1:]
    picked = torch.log_softmax(logits.float(), -1).gather(2, targets.clamp(min=0)[..., None]).squeeze(2)
    full = (picked * (targets != -100)).sum(-1)
    full.sum().backward()
    assert counts.tolist() == [8, 5]
    torch.testing.assert_close(ours, full, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad, model.model.layers[0].mlp.down_proj.weight.grad, rtol=1e-4, atol=1e-5)


def test_lora_from_base_reference_is_the_base_with_the_adapter_off(base_dir: str) -> None:
    model, config = policy_for({"model_name_or_path": base_dir})
    ref, reference = reference_logps(config, model)
    assert reference.kind == "adapter_off" and reference.model is None  # no second copy
    torch.testing.assert_close(ref, logps(load(base_dir)))
    assert not torch.allclose(ref, logps(model))  # the perturbed adapter is back on afterwards


def test_lora_continuing_an_sft_adapter_reference_is_the_sft_model(base_dir: str, tmp_path: Path) -> None:
    sft = get_peft_model(load(base_dir), LoraConfig(r=4, target_modules="all-linear"))
    perturb(sft, seed=7)  # lora_B starts at zero: make the SFT adapter change the model
    sft.save_pretrained(tmp_path / "sft")
    merged_sft = logps(sft.merge_and_unload())

    model, config = policy_for(
        {"model_name_or_path": base_dir, "adapter_name_or_path": str(tmp_path / "sft")}
    )
    ref, reference = reference_logps(config, model)
    assert reference.kind == "sft_adapter"
    torch.testing.assert_close(ref, merged_sft)
    assert not torch.allclose(ref, logps(load(base_dir)))  # not the bare base (LLaMA-Factory #8459)
    # afterwards the trained adapter is active and trainable again, the reference copy frozen
    assert model.active_adapter == "default"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(f".{REFERENCE_ADAPTER}." not in n for n in trainable)
    assert not torch.allclose(logps(model), merged_sft)
    reference.release(model)
    assert REFERENCE_ADAPTER not in model.peft_config  # not saved with the trained adapter


def test_full_finetuning_reference_is_a_frozen_copy(base_dir: str) -> None:
    model, config = policy_for({"model_name_or_path": base_dir, "finetuning_type": "full"})
    ref, reference = reference_logps(config, model)
    assert reference.kind == "frozen_model"
    assert not any(p.requires_grad for p in reference.model.parameters())
    torch.testing.assert_close(ref, logps(load(base_dir)))


def test_ref_model_with_adapters_is_used_when_given(base_dir: str, tmp_path: Path) -> None:
    other = get_peft_model(load(base_dir), LoraConfig(r=4, target_modules="all-linear"))
    perturb(other, seed=9)
    other.save_pretrained(tmp_path / "ref_adapter")
    expected = logps(other.merge_and_unload())
    model, config = policy_for(
        {
            "model_name_or_path": base_dir,
            "ref_model": base_dir,
            "ref_model_adapters": str(tmp_path / "ref_adapter"),
        }
    )
    ref, reference = reference_logps(config, model)
    assert reference.kind == "frozen_model"
    torch.testing.assert_close(ref, expected)
