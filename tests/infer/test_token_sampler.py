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


def test_frequency_and_presence_penalties_count_only_the_output() -> None:
    # prompt [1, 1] then output [3, 3, 1]: token 3 was generated twice, token 1 once (its prompt
    # uses do not count), so greedy moves from 1 (2.0) and 3 (1.5) to 0 (0.5)
    ids = torch.tensor([[1, 1, 3, 3, 1]])
    plain = TokenSampler(options_of(temperature=0.0), prompt_length=2)
    assert plain.choose(LOGITS, ids) == 1
    frequency = TokenSampler(options_of(temperature=0.0, frequency_penalty=1.6), prompt_length=2)
    assert frequency.choose(LOGITS, ids) == 0  # 1: 2.0-1.6=0.4, 3: 1.5-3.2, 0: 0.5
    presence = TokenSampler(options_of(temperature=0.0, presence_penalty=1.6), prompt_length=2)
    assert presence.choose(LOGITS, ids) == 0  # 1: 0.4, 3: -0.1 (once, however often), 0: 0.5
    assert (
        TokenSampler(options_of(temperature=0.0, presence_penalty=1.2), prompt_length=2).choose(LOGITS, ids)
        == 1
    )  # 1: 0.8 > 0.5 and 3: 0.3
    # with the prompt counted too, 1 would fall below 0 at frequency 0.8; it does not
    assert (
        TokenSampler(options_of(temperature=0.0, frequency_penalty=0.8), prompt_length=2).choose(LOGITS, ids)
        == 1
    )


def test_a_negative_penalty_favours_what_was_said() -> None:
    ids = torch.tensor([[4]])  # output: token 4, the worst logit
    sampler = TokenSampler(options_of(temperature=0.0, frequency_penalty=-2.0, presence_penalty=-2.0))
    assert sampler.choose(LOGITS, ids) == 1  # -3 + 4 = 1.0 < 2.0: still token 1
    sampler = TokenSampler(options_of(temperature=0.0, frequency_penalty=-2.0, presence_penalty=-2.0))
    assert sampler.choose(LOGITS, torch.tensor([[4, 4]])) == 4  # -3 + 2*2 + 2 = 3.0 > 2.0
