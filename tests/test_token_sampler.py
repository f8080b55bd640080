"""Choosing the next token: greedy, seeded sampling, and settings so extreme that float32 overflows."""

from __future__ import annotations

import pytest
import torch

from lmforge.infer.engine import SamplingOptions
from lmforge.infer.sampling import TokenSampler

LOGITS = torch.tensor([0.5, 2.0, -1.0, 1.5, -3.0])
SEEN = torch.tensor([[3, 2]])  # tokens already in the sequence


def options_of(**settings) -> SamplingOptions:
    return SamplingOptions(max_new_tokens=1, **settings)


def test_greedy_takes_the_best_token() -> None:
    assert TokenSampler(options_of(temperature=0.0)).choose(LOGITS, SEEN) == 1


def test_the_same_seed_draws_the_same_tokens() -> None:
    def draws(seed: int) -> list[int]:
        sampler = TokenSampler(options_of(temperature=1.5, seed=seed))
        return [sampler.choose(LOGITS, SEEN) for _ in range(40)]

    assert draws(7) == draws(7)
    assert len(set(draws(7))) > 1  # it samples, not always the best token


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # a subnormal penalty divides the seen tokens' positive logits by ~0: the seen token 3 wins
        (options_of(temperature=1.0, repetition_penalty=5e-324), 3),
        (options_of(temperature=0.0, repetition_penalty=2.2e-309), 3),
        # a temperature that is zero in float32 but not greedy: its limit is the best token
        (options_of(temperature=1e-300), 1),
        (options_of(temperature=1e-300, top_k=2, top_p=0.5), 1),
    ],
)
def test_overflowing_settings_tend_to_the_best_token_instead_of_failing(options, expected) -> None:
    assert TokenSampler(options).choose(LOGITS, SEEN) == expected


def test_a_huge_penalty_still_leaves_a_token_to_draw() -> None:
    sampler = TokenSampler(options_of(temperature=1.0, repetition_penalty=1e308, seed=0))
    chosen = {sampler.choose(LOGITS, SEEN) for _ in range(50)}
    assert 2 not in chosen  # a seen negative logit times 1e308 is -inf: never drawn
    assert len(chosen) > 1  # the rest are still sampled
