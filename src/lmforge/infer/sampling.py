"""Choose the next token of each sequence, with that sequence's own sampling settings.

Requests batched together may ask for different temperatures, top-p, top-k, penalties and
seeds. The common case, greedy decoding without penalties, is one ``argmax`` over the whole
batch (:func:`choose_tokens`); rows that sample (their own seeded generator) or carry
penalties (their own history) run per row, using transformers' logits processors for the maths,
and only penalised rows ever need their token history as a tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

if TYPE_CHECKING:
    from lmforge.infer.engine import SamplingOptions


_NO_HISTORY = torch.zeros((1, 0), dtype=torch.long)


class TokenSampler:
    """Greedy or seeded random sampling for one sequence."""

    def __init__(self, options: SamplingOptions, seed_offset: int = 0, prompt_length: int = 0) -> None:
        self.greedy = options.greedy
        self.presence_penalty = options.presence_penalty
        self.frequency_penalty = options.frequency_penalty
        self.prompt_length = prompt_length  # output tokens start here in ``ids_so_far``
        self.processors = LogitsProcessorList()
        if options.repetition_penalty != 1.0:
            self.processors.append(RepetitionPenaltyLogitsProcessor(options.repetition_penalty))
        self.generator: torch.Generator | None = None
        if not self.greedy:
            self.processors.append(TemperatureLogitsWarper(options.temperature))
            if options.top_k and options.top_k > 0:
                self.processors.append(TopKLogitsWarper(options.top_k))
            if 0 < options.top_p < 1:
                self.processors.append(TopPLogitsWarper(options.top_p))
            self.generator = torch.Generator()
            if options.seed is not None:
                self.generator.manual_seed(
                    (options.seed + seed_offset) % 2**64
                )  # any int: torch takes 0..2**64-1
            else:
                self.generator.seed()
        # penalties look at the tokens so far; without them ``choose`` needs no history
        self.needs_history = bool(
            options.repetition_penalty != 1.0 or self.presence_penalty or self.frequency_penalty
        )
        self.plain_greedy = self.greedy and not self.needs_history

    def choose(self, logits: torch.Tensor, ids_so_far: torch.Tensor | None = None) -> int:
        """``logits``: ``[vocab]`` for the next position; ``ids_so_far``: ``[1, length]`` prompt + output
        (needed only when :attr:`needs_history`; the warpers ignore it)."""
        if ids_so_far is None:
            if self.needs_history:
                raise ValueError("this sampler applies penalties: pass the ids so far")
            ids_so_far = _NO_HISTORY
        scores = logits.float().unsqueeze(0)
        if self.presence_penalty or self.frequency_penalty:
            scores = self._penalise_output(scores, ids_so_far)
        if self.processors:
            # transformers annotates LongTensor/FloatTensor, classes no tensor is an instance of
            scores = self.processors(ids_so_far, scores)  # type: ignore[arg-type]
        overflowed = bool(torch.isnan(scores).any() or torch.isposinf(scores).any())
        if self.greedy or overflowed or not bool(torch.isfinite(scores).any()):
            # Greedy, or settings so extreme (a temperature or penalty near zero) that float32
            # overflowed: sampling at such a setting tends to taking the best token, so take it.
            return int(torch.nan_to_num(scores, nan=-math.inf).argmax(-1))
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def _penalise_output(self, scores: torch.Tensor, ids_so_far: torch.Tensor) -> torch.Tensor:
        """OpenAI's presence and frequency penalties, over the tokens generated so far (as vLLM)."""
        output = ids_so_far[0, self.prompt_length :]
        if output.numel() == 0:
            return scores
        counts = torch.bincount(output, minlength=scores.shape[-1])[: scores.shape[-1]].to(scores.dtype)
        return (
            scores - counts * self.frequency_penalty - (counts > 0).to(scores.dtype) * self.presence_penalty
        )


def choose_tokens(
    samplers: Sequence[TokenSampler], logits: torch.Tensor, history: Callable[[int], torch.Tensor]
) -> list[int]:
    """The next token of every row of ``logits`` (``[rows, vocab]``): the plain greedy rows by one
    batched argmax, the others by their own sampler; ``history(i)`` builds row i's ids (``[1, length]``)
    and is called only for rows with penalties."""
    chosen = [0] * len(samplers)
    greedy = [i for i, sampler in enumerate(samplers) if sampler.plain_greedy]
    if greedy:
        rows = logits if len(greedy) == len(samplers) else logits[greedy]
        best = torch.nan_to_num(rows.float(), nan=-math.inf).argmax(-1).tolist()
        for i, token in zip(greedy, best, strict=True):
            chosen[i] = token
    for i, sampler in enumerate(samplers):
        if not sampler.plain_greedy:
            chosen[i] = sampler.choose(logits[i], history(i) if sampler.needs_history else None)
    return chosen
