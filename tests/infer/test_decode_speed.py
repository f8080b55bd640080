"""The decode loop's fast paths: one batched argmax for plain greedy rows (same tokens as row by
row), histories built only for penalised rows, and the thread count chosen by machine and load."""

from __future__ import annotations

import torch

from lmforge.infer.engine import SamplingOptions
from lmforge.infer.hf_engine import decoding_threads
from lmforge.infer.sampling import TokenSampler, choose_tokens


def options_of(**settings) -> SamplingOptions:
    return SamplingOptions(max_new_tokens=1, **settings)


def test_batched_choice_equals_row_by_row_and_builds_only_penalised_histories() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 50)
    logits[4, 7] = float("nan")  # a broken row still yields a token, as row by row
    history = [torch.tensor([[i, (3 * i) % 50, 7]]) for i in range(6)]
    settings = [
        options_of(temperature=0.0),
        options_of(temperature=0.0, frequency_penalty=1.5),
        options_of(temperature=0.9, seed=5),
        options_of(temperature=0.0, repetition_penalty=1.3),
        options_of(temperature=0.0),
        options_of(temperature=1.1, top_k=5, top_p=0.8, seed=9, presence_penalty=0.5),
    ]
    expected = [
        TokenSampler(o, prompt_length=1).choose(logits[i], history[i]) for i, o in enumerate(settings)
    ]
    asked: list[int] = []

    def history_of(i: int) -> torch.Tensor:
        asked.append(i)
        return history[i]

    samplers = [TokenSampler(o, prompt_length=1) for o in settings]
    assert choose_tokens(samplers, logits, history_of) == expected
    assert sorted(asked) == [1, 3, 5]  # only rows with penalties
    assert [s.plain_greedy for s in samplers] == [True, False, False, False, True, False]


def test_all_greedy_batch_is_one_argmax() -> None:
    logits = torch.randn(8, 100)
    samplers = [TokenSampler(options_of(temperature=0.0)) for _ in range(8)]
    assert choose_tokens(samplers, logits, lambda i: 1 / 0) == logits.argmax(-1).tolist()


def test_threads_by_machine_and_load() -> None:
    big = 1e9  # FLOPs of a step: enough work for every core
    assert decoding_threads(16, rows=1, others_load=0.0, step_flops=big) == 16  # a lone request: every core
    assert decoding_threads(16, rows=8, others_load=0.0, step_flops=big) == 15  # one core for the server
    assert decoding_threads(16, rows=8, others_load=6.2, step_flops=big) == 10  # busy cores left to others
    assert decoding_threads(2, rows=1, others_load=5.0, step_flops=big) == 1  # an overloaded machine
    assert decoding_threads(16, rows=1, others_load=0.0, step_flops=5e7) == 2  # a tiny step: few threads
    assert decoding_threads(1, rows=4, others_load=0.0, step_flops=big) == 1
