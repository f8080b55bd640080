"""Chunked cross-entropy: the same loss and gradients as transformers' plain loss, without the full logits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Gemma2Config, LlamaConfig, LlamaForCausalLM, Qwen2Config

from lmforge.model.loss import (
    chunked_causal_lm_loss,
    chunked_loss_blocker,
    disable_chunked_loss,
    enable_chunked_loss,
)

VOCAB = 1500


def _tiny(arch: str, *, tied: bool = False) -> torch.nn.Module:
    common = dict(
        vocab_size=VOCAB,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
    )
    config = LlamaConfig(**common) if arch == "llama" else Qwen2Config(**common)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.config.use_cache = False
    return model


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, 40), generator=generator)
    labels = ids.clone()
    labels[:, :7] = -100
    labels[1, 30:] = -100
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _loss_and_grads(model: torch.nn.Module, **extra: object) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = model(**_batch(), **extra).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    ("arch", "tied", "lora"), [("llama", False, False), ("qwen2", True, False), ("qwen2", False, True)]
)
def test_chunked_loss_and_grads_equal_plain(
    arch: str, tied: bool, lora: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 16-row chunks: many chunks per batch
    monkeypatch.setattr("lmforge.model.loss.CHUNK_ELEMENTS", VOCAB * 16)
    model = _tiny(arch, tied=tied)
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    plain_loss, plain_grads = _loss_and_grads(model, num_items_in_batch=torch.tensor(50))
    assert enable_chunked_loss(model)
    chunked_loss, chunked_grads = _loss_and_grads(model, num_items_in_batch=torch.tensor(50))
    torch.testing.assert_close(chunked_loss, plain_loss, rtol=1e-6, atol=1e-6)
    assert chunked_grads.keys() == plain_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    # without num_items_in_batch both divide by the count of trained tokens
    disable_chunked_loss(model)
    plain_mean, _ = _loss_and_grads(model)
    enable_chunked_loss(model)
    chunked_mean, _ = _loss_and_grads(model)
    torch.testing.assert_close(chunked_mean, plain_mean, rtol=1e-6, atol=1e-6)


def test_generation_path_is_untouched() -> None:
    model = _tiny("llama")
    batch = _batch()
    before = model(input_ids=batch["input_ids"]).logits
    enable_chunked_loss(model)
    output = model(**batch)
    assert output.logits is None and output.loss is not None
    torch.testing.assert_close(model(input_ids=batch["input_ids"]).logits, before)


def test_no_trained_token_gives_zero_loss_with_a_graph() -> None:
    hidden = torch.randn(2, 5, 8, requires_grad=True)
    weight = torch.randn(30, 8, requires_grad=True)
    loss = chunked_causal_lm_loss(hidden, weight, torch.full((2, 5), -100))
    loss.backward()
    assert loss.item() == 0.0 and hidden.grad is not None and weight.grad is not None


def test_chunked_loss_stays_off_where_it_would_be_wrong() -> None:
    gemma = AutoModelForCausalLM.from_config(
        Gemma2Config(
            vocab_size=256,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            final_logit_softcapping=30.0,
        )
    )
    assert "final_logit_softcapping" in chunked_loss_blocker(gemma)
    assert not enable_chunked_loss(gemma)
    wrapped = get_peft_model(
        _tiny("llama"), LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"])
    )
    assert "plain" in chunked_loss_blocker(wrapped.get_base_model())
    assert chunked_loss_blocker(_tiny("qwen2")) is None


class _ScaledLlama(LlamaForCausalLM):
    """A causal LM whose forward scales its logits without saying so in its config."""

    def forward(self, *args: object, **kwargs: object) -> object:
        output = super().forward(*args, **kwargs)
        if output.logits is not None:
            output.logits = output.logits * 2.0
        return output


def test_a_forward_that_changes_the_logits_keeps_the_plain_loss_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The chunked loss is checked against what the model computes, not against its source text."""
    config = _tiny("llama").config
    torch.manual_seed(0)
    model = _ScaledLlama(config)
    with caplog.at_level(logging.WARNING, logger="lmforge.model.loss"):
        assert not enable_chunked_loss(model)
    assert "differ from the output layer" in caplog.text
    assert any(
        r.levelno == logging.WARNING and "chunked cross-entropy off" in r.message for r in caplog.records
    )


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "llama3"])
@pytest.mark.parametrize("lora", [False, True])
def test_chunked_loss_applies_to_every_tiny_architecture(
    arch: str, lora: bool, tiny_model: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Fails when a transformers release (or a change here) silently turns the chunked loss off."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model(arch), dtype=torch.float32)
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    with caplog.at_level(logging.WARNING, logger="lmforge.model.loss"):
        assert enable_chunked_loss(model), caplog.text
    batch = {key: value % model.config.vocab_size for key, value in _batch().items() if key != "labels"}
    labels = batch["input_ids"].clone()
    labels[:, :7] = -100
    output = model(**batch, labels=labels)
    assert output.logits is None and output.loss is not None  # the chunked path ran
