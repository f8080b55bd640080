"""Packing: rows respect cutoff_len, keep every sample once, and train exactly like samples run one by one."""

from __future__ import annotations

import random

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from lmforge.data.batching import (
    LENGTHS_COLUMN,
    TrainingCollator,
    pack_dataset,
    plan_bins,
    position_ids_for,
    trained_tokens,
)


def _samples(count: int, vocab: int, seed: int = 0) -> list[dict[str, list[int]]]:
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        length = rng.randint(2, 24)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        prompt = rng.randint(0, length - 1)  # pt-style samples (prompt 0) train on their first token too
        samples.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return samples


def _tiny(arch: str, attention: str) -> torch.nn.Module:
    common = dict(
        vocab_size=320,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    config = LlamaConfig(**common) if arch == "llama" else Qwen2Config(**common)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attention, dtype=torch.float32)
    model.config.use_cache = False  # as in training: a cache turns off transformers' packed-sequence masks
    return model


def test_bins_hold_every_sample_once_within_capacity() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(1, 50) for _ in range(300)] + [70]
    bins = plan_bins(lengths, 64)
    flat = sorted(i for b in bins for i in b)
    assert flat == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 64 for b in bins if len(b) > 1)
    assert [b for b in bins if sum(lengths[i] for i in b) > 64] == [[300]]  # oversized: alone, not cut
    assert len(bins) <= -(-sum(lengths) // 64) + 3  # near the lower bound


def test_pack_dataset_masks_each_sample_start_and_keeps_tokens() -> None:
    samples = _samples(40, 320)
    packed, report = pack_dataset(Dataset.from_list(samples), 48)
    assert report.samples == 40 and report.rows == len(packed)
    assert sum(len(r) for r in packed["input_ids"]) == sum(len(s["input_ids"]) for s in samples)
    assert sorted(n for row in packed[LENGTHS_COLUMN] for n in row) == sorted(
        len(s["input_ids"]) for s in samples
    )
    for row in packed:
        start = 0
        for length in row[LENGTHS_COLUMN]:
            assert row["labels"][start] == -100
            start += length
        assert start == len(row["input_ids"]) <= 48


def test_collator_restarts_positions_and_pads_as_its_own_sequence() -> None:
    rows = [
        {"input_ids": [5, 6, 7, 8, 9], "labels": [-100, 6, 7, -100, 9], LENGTHS_COLUMN: [3, 2]},
        {"input_ids": [5, 6], "labels": [-100, 6], LENGTHS_COLUMN: [2]},
    ]
    batch = TrainingCollator(pad_token_id=0)(rows)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    assert batch["labels"][1].tolist() == [-100, 6, -100, -100, -100]
    assert "attention_mask" not in batch
    assert trained_tokens(batch) == 4
    plain = TrainingCollator(pad_token_id=0, pad_to_multiple_of=4)(
        [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}]
    )
    assert plain["attention_mask"].tolist() == [[1, 1, 1, 0]]
    flat = TrainingCollator(pad_token_id=0, flatten=True)(rows)
    assert flat["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1]]
    assert position_ids_for([2, 1]) == [0, 1, 0]


@pytest.mark.parametrize(("arch", "attention"), [("llama", "sdpa"), ("qwen2", "eager")])
def test_packed_batch_equals_samples_one_by_one(arch: str, attention: str) -> None:
    model = _tiny(arch, attention)
    samples = _samples(12, 320, seed=3)
    packed, _ = pack_dataset(Dataset.from_list(samples), 40)
    assert len(packed) < len(samples)
    batch = TrainingCollator(pad_token_id=0)(list(packed))
    total_items = sum(sum(1 for x in s["labels"][1:] if x != -100) for s in samples)
    assert trained_tokens(batch) == total_items

    model.zero_grad()
    packed_loss = model(**batch).loss
    packed_loss.backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    reference = torch.zeros(())
    for sample in samples:
        one = TrainingCollator(pad_token_id=0)([sample])
        loss = model(**one, num_items_in_batch=total_items).loss  # sum over the sample / all trained tokens
        loss.backward()
        reference += loss.detach()
    torch.testing.assert_close(packed_loss.detach(), reference, rtol=0, atol=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(packed_grads[name], param.grad, rtol=0, atol=1e-5, msg=name)


def test_positions_that_do_not_restart_let_samples_see_each_other() -> None:
    """The check above can fail: the same row without restarting positions is a different computation."""
    model = _tiny("llama", "sdpa")
    rows = [{"input_ids": [5, 6, 7, 8, 9, 10], "labels": [-100, 6, 7, -100, 9, 10], LENGTHS_COLUMN: [3, 3]}]
    batch = TrainingCollator(pad_token_id=0)(rows)
    contaminated = dict(batch, position_ids=torch.arange(6)[None])
    assert not torch.allclose(model(**batch).loss, model(**contaminated).loss, atol=1e-4)
