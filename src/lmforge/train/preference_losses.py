"""Preference losses as small pure functions of per-sequence log-probabilities.

Every pairwise loss takes the chosen and rejected *scores* of a batch of pairs and returns one
loss per pair. A score is the policy's log-probability of the answer minus the reference's
(losses with a reference) or the policy's own log-probability (orpo, simpo), summed over the
answer's tokens or averaged over them (``length_normalised``), as in LLaMA-Factory. The implied
rewards are ``beta * score`` for every loss (TRL's and LLaMA-Factory's ``rewards/*`` metrics).

Adding a loss: write its function here, register it in ``PAIR_LOSSES``, and add it to
``pref_loss``'s choices in ``config/finetuning.py``; tests/train/test_preference_losses.py holds it to
its closed form and to TRL.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossSettings:
    """The hyper-parameters the losses read (LLaMA-Factory's keys)."""

    beta: float = 0.1  # pref_beta
    label_smoothing: float = 0.0  # dpo_label_smoothing
    simpo_gamma: float = 0.5


def sigmoid_loss(chosen: torch.Tensor, rejected: torch.Tensor, s: LossSettings) -> torch.Tensor:
    """DPO (Rafailov et al. 2023); with label smoothing, conservative DPO (the label flips with probability ε)."""
    logits = s.beta * (chosen - rejected)
    return -(1 - s.label_smoothing) * F.logsigmoid(logits) - s.label_smoothing * F.logsigmoid(-logits)


def hinge_loss(chosen: torch.Tensor, rejected: torch.Tensor, s: LossSettings) -> torch.Tensor:
    """SLiC's hinge on the log-ratio margin (Zhao et al. 2023)."""
    return torch.relu(1 - s.beta * (chosen - rejected))


def ipo_loss(chosen: torch.Tensor, rejected: torch.Tensor, s: LossSettings) -> torch.Tensor:
    """IPO (Azar et al. 2023, eq. 17): the margin regressed to 1 / (2 beta); scores are token averages."""
    return (chosen - rejected - 1 / (2 * s.beta)) ** 2


def orpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, s: LossSettings) -> torch.Tensor:
    """ORPO (Hong et al. 2024): the chosen answer's NLL plus beta times the odds-ratio term.

    Scores are the policy's mean token log-probabilities; odds(y) = p / (1 - p).
    """
    log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))
    return -chosen - s.beta * F.logsigmoid(log_odds)


def simpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, s: LossSettings) -> torch.Tensor:
    """SimPO (Meng et al. 2024): length-normalised margin minus the target margin gamma, no reference."""
    return -F.logsigmoid(s.beta * (chosen - rejected) - s.simpo_gamma)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for x < 0, accurate near 0 and for very negative x (Mächler 2012)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@dataclass(frozen=True)
class PairLoss:
    fn: Callable[[torch.Tensor, torch.Tensor, LossSettings], torch.Tensor]
    uses_reference: bool
    length_normalised: bool  # scores are mean token log-probabilities, not sums


PAIR_LOSSES: dict[str, PairLoss] = {
    "sigmoid": PairLoss(sigmoid_loss, uses_reference=True, length_normalised=False),
    "hinge": PairLoss(hinge_loss, uses_reference=True, length_normalised=False),
    "ipo": PairLoss(ipo_loss, uses_reference=True, length_normalised=True),
    "orpo": PairLoss(orpo_loss, uses_reference=False, length_normalised=True),
    "simpo": PairLoss(simpo_loss, uses_reference=False, length_normalised=True),
}


def sft_term(chosen_logps: torch.Tensor, chosen_tokens: torch.Tensor) -> torch.Tensor:
    """``pref_ftx``'s SFT term: the chosen answer's mean token negative log-likelihood."""
    return -chosen_logps / chosen_tokens.clamp(min=1)


def kto_loss(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    kl: torch.Tensor,
    s: LossSettings,
    chosen_weight: float = 1.0,
    rejected_weight: float = 1.0,
) -> torch.Tensor:
    """KTO (Ethayarajh et al. 2024, eq. 7): one loss per example, desirable ones first.

    ``kl`` is the batch's reference point: the policy/reference KL estimated on mismatched
    prompt/answer pairs, clamped at 0 and detached (no gradient flows through it).
    """
    kl = kl.detach().clamp(min=0)
    chosen = chosen_weight * (1 - torch.sigmoid(s.beta * (chosen_logratios - kl)))
    rejected = rejected_weight * (1 - torch.sigmoid(s.beta * (kl - rejected_logratios)))
    return torch.cat([chosen, rejected])


def pairwise_reward_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry loss of a reward model: ``-log sigmoid(r_chosen - r_rejected)`` per pair."""
    return -F.logsigmoid(chosen_rewards - rejected_rewards)
