"""Which weights train: LoRA variants, freeze, full, and continuing an adapter."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Qwen2Config

from lmforge.config import FinetuningArguments, ModelArguments
from lmforge.errors import ConfigError
from lmforge.model.adapter import prepare_trainable


def _tiny() -> torch.nn.Module:
    config = Qwen2Config(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def _trainable(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def _prepare(
    model: torch.nn.Module, adapters: list[str] | None = None, **finetuning: object
) -> torch.nn.Module:
    return prepare_trainable(
        model, ModelArguments(adapter_name_or_path=adapters), FinetuningArguments(**finetuning)
    )


def test_lora_all_targets_every_linear_layer_but_the_head() -> None:
    model = _prepare(_tiny(), lora_rank=4)
    trainable = _trainable(model)
    assert trainable and all("lora_" in name for name in trainable)
    wrapped = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q_proj.scaling["default"] == 2.0  # lora_alpha defaults to 2 * rank


def test_lora_variants_and_named_targets() -> None:
    rslora = _prepare(_tiny(), lora_rank=4, lora_alpha=8, use_rslora=True, lora_target=["q_proj", "v_proj"])
    layer = rslora.base_model.model.model.layers[0].self_attn
    assert math.isclose(layer.q_proj.scaling["default"], 8 / math.sqrt(4))
    assert not hasattr(layer.k_proj, "lora_A")
    dora = _prepare(_tiny(), lora_rank=2, use_dora=True)
    assert any("lora_magnitude_vector" in name for name in _trainable(dora))
    extra = _prepare(_tiny(), lora_rank=2, additional_target=["embed_tokens"])
    assert any("embed_tokens" in name and "lora_" not in name for name in _trainable(extra))
    with pytest.raises(ConfigError, match="lora_target.*qproj.*choose from"):
        _prepare(_tiny(), lora_target=["qproj"])


def test_freeze_trains_only_the_chosen_layers_and_modules() -> None:
    last = _trainable(_prepare(_tiny(), finetuning_type="freeze", freeze_trainable_layers=1))
    assert last and all(".layers.2." in name for name in last)
    first_mlp = _trainable(
        _prepare(
            _tiny(),
            finetuning_type="freeze",
            freeze_trainable_layers=-1,
            freeze_trainable_modules=["mlp"],
            freeze_extra_modules=["embed_tokens"],
        )
    )
    assert first_mlp == {
        "model.embed_tokens.weight",
        *(f"model.layers.0.mlp.{m}_proj.weight" for m in ("gate", "up", "down")),
    }
    with pytest.raises(ConfigError, match="freeze_trainable_modules.*attn.*choose from"):
        _prepare(_tiny(), finetuning_type="freeze", freeze_trainable_modules=["attn"])
    with pytest.raises(ConfigError, match="freeze_trainable_layers"):
        _prepare(_tiny(), finetuning_type="freeze", freeze_trainable_layers=5)


def test_full_trains_everything() -> None:
    model = _tiny()
    assert _trainable(_prepare(model, finetuning_type="full")) == {n for n, _ in model.named_parameters()}


def test_adapter_name_or_path_continues_or_stacks_a_new_adapter(tmp_path: Path) -> None:
    trained = get_peft_model(_tiny(), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    trained.save_pretrained(str(tmp_path / "first"))
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        expected = trained(input_ids=ids).logits

    continued = _prepare(_tiny(), [str(tmp_path / "first")])
    assert _trainable(continued) and all("q_proj.lora_" in n for n in _trainable(continued))
    stacked = _prepare(_tiny(), [str(tmp_path / "first")], create_new_adapter=True, lora_rank=2)
    assert any("k_proj.lora_" in n for n in _trainable(stacked)), (
        "a fresh all-linear adapter on the merged base"
    )
    with torch.no_grad():
        torch.testing.assert_close(continued(input_ids=ids).logits, expected)
        torch.testing.assert_close(stacked(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)

    # adapter_name_or_path with another finetuning_type is refused at load (tests/config/test_config.py)
    with pytest.raises(ConfigError, match="not a PEFT adapter folder"):
        _prepare(_tiny(), [str(tmp_path)])


def test_new_special_tokens_are_added_as_whole_tokens(tmp_path: Path) -> None:
    """``new_special_tokens: "<|a|>,<|b|>"`` (LLaMA-Factory's comma-separated form) adds unsplittable tokens."""
    from lmforge.assets import tiny_model
    from lmforge.config.parser import build_config
    from lmforge.model.loader import load_tokenizer

    config = build_config(
        {"model_name_or_path": str(tiny_model("llama")), "new_special_tokens": "<|tool_x|>,<|tool_y|>"}
    )
    tokenizer = load_tokenizer(config.model)
    assert tokenizer.tokenize("a<|tool_x|>b<|tool_y|>") == ["a", "<|tool_x|>", "b", "<|tool_y|>"]
