"""Each preference loss equals its closed form on hand-computed numbers and TRL's implementation.

TRL (the version pinned in requirements/constraints.txt) is the published reference: its
``CPOTrainer.cpo_loss`` holds the sigmoid (with label smoothing), hinge, IPO and SimPO formulas
as functions of two score tensors, and ``ORPOTrainer.odds_ratio_loss`` the ORPO odds-ratio
term. They are methods that read a few settings from ``self``; a namespace carries those.
Gradients are compared too. The per-token log-probabilities of model/loss.py are checked
against full-logit log_softmax, values and gradients.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lmforge.model.loss import chunked_token_log_probs
from lmforge.train.preference_losses import (
    PAIR_LOSSES,
    LossSettings,
    kto_loss,
    log1mexp,
    pairwise_reward_loss,
    sft_term,
)

trl_cpo = pytest.importorskip("trl.experimental.cpo")
trl_orpo = pytest.importorskip("trl.experimental.orpo")

SETTINGS = LossSettings(beta=0.3, label_smoothing=0.2, simpo_gamma=0.7)


def scores(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean token log-probabilities of four chosen and four rejected answers (all < 0)."""
    generator = torch.Generator().manual_seed(seed)
    chosen = -torch.rand(4, generator=generator, dtype=torch.float64) * 3 - 0.05
    rejected = -torch.rand(4, generator=generator, dtype=torch.float64) * 3 - 0.05
    return chosen.requires_grad_(), rejected.requires_grad_()


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# -- closed forms on numbers worked by hand: chosen score -1.0, rejected -3.0 (margin 2.0)
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # -(0.8) log σ(0.6) - 0.2 log σ(-0.6)
        ("sigmoid", -0.8 * math.log(sigmoid(0.6)) - 0.2 * math.log(sigmoid(-0.6))),
        ("hinge", 1 - 0.6),  # relu(1 - 0.3 * 2)
        ("ipo", (2.0 - 1 / 0.6) ** 2),  # (margin - 1/(2 beta))^2
        ("simpo", -math.log(sigmoid(0.6 - 0.7))),  # -log σ(beta * margin - gamma)
        # 1 - log odds: log(e^-1/(1-e^-1)) - log(e^-3/(1-e^-3)); loss = -chosen - beta log σ(log odds)
        (
            "orpo",
            1.0
            - 0.3
            * math.log(
                sigmoid(
                    math.log(math.exp(-1) / (1 - math.exp(-1))) - math.log(math.exp(-3) / (1 - math.exp(-3)))
                )
            ),
        ),
    ],
)
def test_pair_loss_closed_form(name: str, expected: float) -> None:
    loss = PAIR_LOSSES[name].fn(torch.tensor([-1.0], dtype=torch.float64), torch.tensor([-3.0]), SETTINGS)
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_kto_closed_form() -> None:
    kl = torch.tensor(0.5)
    losses = kto_loss(torch.tensor([2.0]), torch.tensor([-1.0]), kl, SETTINGS, 1.5, 0.5)
    assert losses.tolist() == pytest.approx([1.5 * (1 - sigmoid(0.3 * 1.5)), 0.5 * (1 - sigmoid(0.3 * 1.5))])
    # the reference point is clamped at 0: a negative KL estimate counts as 0
    clamped = kto_loss(torch.tensor([2.0]), torch.tensor([-1.0]), torch.tensor(-4.0), SETTINGS)
    assert clamped.tolist() == pytest.approx([1 - sigmoid(0.6), 1 - sigmoid(0.3)])


def test_kto_reference_point_carries_no_gradient() -> None:
    kl = torch.tensor(0.5, requires_grad=True)
    chosen = torch.tensor([2.0], requires_grad=True)
    kto_loss(chosen, torch.tensor([-1.0]), kl, SETTINGS).sum().backward()
    assert chosen.grad is not None and kl.grad is None


def test_reward_and_sft_terms() -> None:
    assert pairwise_reward_loss(torch.tensor([1.0]), torch.tensor([-0.5])).item() == pytest.approx(
        -math.log(sigmoid(1.5))
    )
    assert sft_term(torch.tensor([-6.0]), torch.tensor([3])).item() == pytest.approx(2.0)


def test_log1mexp_is_accurate_at_both_ends() -> None:
    x = torch.tensor([-1e-8, -0.5, -50.0], dtype=torch.float64)
    assert log1mexp(x).tolist() == pytest.approx(
        [math.log(1e-8), math.log(1 - math.exp(-0.5)), -math.exp(-50)]
    )


# -- TRL on the same inputs, values and gradients
def trl_cpo_loss(loss_type: str, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    settings = SimpleNamespace(
        alpha=0.0,
        loss_type=loss_type,
        beta=SETTINGS.beta,
        simpo_gamma=SETTINGS.simpo_gamma,
        label_smoothing=SETTINGS.label_smoothing if loss_type == "sigmoid" else 0.0,
        accelerator=SimpleNamespace(device=chosen.device),
    )
    losses, *_ = trl_cpo.CPOTrainer.cpo_loss(settings, chosen, rejected)
    return losses


@pytest.mark.parametrize("name", ["sigmoid", "hinge", "ipo", "simpo"])
def test_pair_loss_equals_trl(name: str) -> None:
    ours_c, ours_r = scores(1)
    theirs_c, theirs_r = (t.detach().clone().requires_grad_() for t in (ours_c, ours_r))
    ours = PAIR_LOSSES[name].fn(ours_c, ours_r, SETTINGS)
    theirs = trl_cpo_loss(name, theirs_c, theirs_r)
    torch.testing.assert_close(ours, theirs)
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(ours_c.grad, theirs_c.grad)
    torch.testing.assert_close(ours_r.grad, theirs_r.grad)


def test_orpo_equals_trl() -> None:
    """TRL returns beta * log σ(log odds) and subtracts it from the chosen NLL; ours is the whole loss."""
    ours_c, ours_r = scores(2)
    theirs_c, theirs_r = (t.detach().clone().requires_grad_() for t in (ours_c, ours_r))
    ours = PAIR_LOSSES["orpo"].fn(ours_c, ours_r, SETTINGS)
    settings = SimpleNamespace(beta=SETTINGS.beta, accelerator=SimpleNamespace(device=ours_c.device))
    ratio_term, *_ = trl_orpo.ORPOTrainer.odds_ratio_loss(settings, theirs_c, theirs_r)
    theirs = -theirs_c - ratio_term
    torch.testing.assert_close(ours, theirs)
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(ours_c.grad, theirs_c.grad)
    torch.testing.assert_close(ours_r.grad, theirs_r.grad)


def test_chunked_token_log_probs_equal_log_softmax() -> None:
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(37, 16, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (37,), generator=generator)
    upstream = torch.randn(37, generator=generator, dtype=torch.float64)
    ours = chunked_token_log_probs(hidden, weight, targets, chunk_size=8)
    (ours * upstream).sum().backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    full = F.log_softmax(hidden @ weight.T, dim=-1).gather(1, targets[:, None]).squeeze(1)
    (full * upstream).sum().backward()
    torch.testing.assert_close(ours.double(), full, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grads[0], hidden.grad, rtol=1e-5, atol=1e-6)  # logits in float32
    torch.testing.assert_close(grads[1], weight.grad, rtol=1e-5, atol=1e-6)
