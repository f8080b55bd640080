"""Causal-LM cross-entropy computed in chunks, so the ``[tokens, vocab]`` float32 logits never exist at once.

Qwen's vocabulary has 151k entries: for a batch of 8 x 1024 tokens the plain loss holds a 5 GB
float32 logits tensor (plus its gradient). Here the loss is computed from the final hidden
states and the output-embedding weight a few hundred rows at a time, only over the positions
that carry a label, and the gradients are formed chunk by chunk in the same pass. The result
equals transformers' ``ForCausalLMLoss`` (sum over trained tokens divided by
``num_items_in_batch``, or their count) up to float rounding.

``enable_chunked_loss(model)`` swaps the loss into a causal LM's forward when the model's logits
are its output layer applied to its base model's hidden states (checked on a few tokens, not read
from transformers' source); otherwise it leaves the model alone and warns why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeGuard, cast

import torch
from peft import PeftModel
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from lmforge.templates.results import IGNORE_INDEX

logger = logging.getLogger(__name__)

CHUNK_ELEMENTS = 2**25  # float32 logits per chunk: 128 MiB
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


class _LinearCrossEntropy(torch.autograd.Function):
    """Sum of token cross-entropies of ``hidden @ weight.T``; gradients built chunk by chunk in forward."""

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int
    ) -> torch.Tensor:
        need_hidden_grad = ctx.needs_input_grad[0]
        need_weight_grad = ctx.needs_input_grad[1]
        w = weight.to(hidden.dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden_grad else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight_grad else None
        )
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk]
            y = targets[start : start + chunk]
            logits = (h @ w.T).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
            if need_hidden_grad or need_weight_grad:
                probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                probs[torch.arange(y.shape[0], device=y.device), y] -= 1.0
                d_logits = probs.to(hidden.dtype)
                if grad_hidden is not None:
                    grad_hidden[start : start + chunk] = d_logits @ w
                if grad_weight is not None:
                    grad_weight += d_logits.T.float() @ h.float()
            del logits
        ctx.grads = (grad_hidden, grad_weight)  # already computed: backward only scales them
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.grads
        ctx.grads = None
        scale = grad_output.float()
        gh = grad_hidden * scale.to(grad_hidden.dtype) if grad_hidden is not None else None
        gw = (grad_weight * scale).to(ctx.weight_dtype) if grad_weight is not None else None
        return gh, gw, None, None


def chunk_rows(vocab_size: int) -> int:
    """Rows per chunk so one chunk's float32 logits stay near ``CHUNK_ELEMENTS``."""
    return max(16, CHUNK_ELEMENTS // max(vocab_size, 1))


def chunked_causal_lm_loss(
    hidden_states: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    shift_labels: torch.Tensor | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The causal-LM loss of ``hidden_states @ weight.T`` against ``labels`` (shifted here, -100 ignored).

    Matches ``ForCausalLMLoss``: the sum over trained positions divided by ``num_items_in_batch``
    when given (gradient accumulation, several processes), else by the number of trained positions.
    """
    if shift_labels is None:
        if labels is None:
            raise ValueError("chunked_causal_lm_loss needs labels or shift_labels")
        shift_labels = nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
    targets = shift_labels.reshape(-1).to(hidden.device)
    positions = (targets != IGNORE_INDEX).nonzero().squeeze(1)
    if positions.numel() == 0:
        # keep the graph connected (DDP expects every parameter to get a gradient)
        total = hidden.sum() * 0.0 + weight.sum() * 0.0
    else:
        rows = chunk_size or chunk_rows(weight.shape[0])
        total = _LinearCrossEntropy.apply(hidden.index_select(0, positions), weight, targets[positions], rows)
    if num_items_in_batch is None:
        return total / max(positions.numel(), 1)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def chunked_loss_blocker(model: nn.Module) -> str | None:
    """Why the chunked loss would not equal this model's own loss, or None when it does.

    The chunked loss runs the model's base model (``model.base_model``, the decoder, which also
    merges image and audio features) and projects its ``last_hidden_state`` through
    ``model.get_output_embeddings()``: both are public transformers paths. Config keys that
    transform the logits or add a loss term are refused by name; anything else the model's own
    forward might do to the logits is caught by comparing both on a few tokens (``_probe``).
    """
    if not isinstance(model, PreTrainedModel):
        return f"{type(model).__name__} is not a transformers model"
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder models compute their loss differently"
    text_config = config.get_text_config()
    for name in _LOGIT_TRANSFORMS:
        values = {getattr(text_config, name, None), getattr(config, name, None)}
        if values - {None, 1}:  # 1 == 1.0: no scaling
            return f"the model transforms its logits ({name})"
    if getattr(text_config, "output_router_logits", False):
        return "the model adds a router auxiliary loss"
    head = model.get_output_embeddings()
    if type(head) is not nn.Linear or head.bias is not None:
        return (
            "the output layer is not a plain bias-free Linear (an adapter or modules_to_save wraps lm_head?)"
        )
    if model.base_model is model:
        return f"{type(model).__name__} has no base model (decoder) apart from its head"
    return _probe(model, head)


def _probe(model: PreTrainedModel, head: nn.Linear) -> str | None:
    """Compare the model's own logits with ``head(base_model(...).last_hidden_state)`` on 8 tokens.

    This is what makes the chunked loss safe on a transformers release or model class we have
    not seen: if its forward does anything more than project the hidden states, the two differ.
    """
    ids = torch.arange(8, device=head.weight.device)[None] % head.weight.shape[0]
    was_training = model.training
    model.eval()  # no dropout: both passes must see the same network
    try:
        with torch.no_grad():
            own = model(input_ids=ids, use_cache=False).logits
            hidden = model.base_model(input_ids=ids, use_cache=False).last_hidden_state
            ours = head(hidden)
    except (TypeError, ValueError, AttributeError, RuntimeError) as exc:
        return f"its base model cannot be run on token ids alone ({type(exc).__name__}: {exc})"
    finally:
        model.train(was_training)
    if own is None or own.shape != ours.shape:
        return f"{type(model).__name__}'s logits are not one projection per position"
    tolerance = 1e-3 if own.dtype == torch.float32 else 1e-2  # half precision: same ops, coarser rounding
    if not torch.allclose(own.float(), ours.float(), rtol=tolerance, atol=tolerance):
        return f"{type(model).__name__}'s logits differ from the output layer applied to its hidden states"
    return None


def enable_chunked_loss(model: nn.Module) -> bool:
    """Compute the training loss of ``model`` (a causal LM, or a PEFT model around one) in chunks.

    Only calls with ``labels`` change; generation and label-free calls run the model's own
    forward. Returns False, with a warning that says why, when the chunked loss would not be
    correct (training then runs the model's own loss and holds the full logits).
    """
    causal_lm = _causal_lm(model)
    if isinstance(vars(causal_lm).get("forward"), _ChunkedForward):
        return True
    reason = chunked_loss_blocker(causal_lm)
    if reason or not isinstance(causal_lm, PreTrainedModel):
        logger.warning("chunked cross-entropy off (the full logits are held): %s", reason)
        return False
    vars(causal_lm)["forward"] = _ChunkedForward(causal_lm, causal_lm.forward)  # this instance only
    return True


def disable_chunked_loss(model: nn.Module) -> None:
    """Undo :func:`enable_chunked_loss` (the class's forward applies again)."""
    causal_lm = _causal_lm(model)
    if isinstance(vars(causal_lm).get("forward"), _ChunkedForward):
        del vars(causal_lm)["forward"]


def _causal_lm(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (PEFT's public ``get_base_model``), or the model."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


class _ChunkedForward:
    """A causal LM's forward whose loss is :func:`chunked_causal_lm_loss` of its base model's hidden states.

    Calls without labels (generation, scoring) run the model's own forward unchanged.
    """

    def __init__(self, causal_lm: PreTrainedModel, original: Callable[..., Any]) -> None:
        self.causal_lm = causal_lm
        self.original = original

    def __call__(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,  # a transformers Cache, passed through untouched
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> Any:
        shift_labels = kwargs.pop("shift_labels", None)
        if labels is None and shift_labels is None:
            return self.original(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=past_key_values,
                inputs_embeds=inputs_embeds,
                use_cache=use_cache,
                logits_to_keep=logits_to_keep,
                **kwargs,
            )
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        kwargs.pop("ignore_index", None)
        outputs = self.causal_lm.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        loss = chunked_causal_lm_loss(
            outputs.last_hidden_state,
            self.causal_lm.get_output_embeddings().weight,
            labels,
            shift_labels=shift_labels,
            num_items_in_batch=num_items_in_batch,
        )
        return CausalLMOutputWithPast(
            loss=cast("torch.FloatTensor", loss),  # transformers annotates FloatTensor: any float tensor
            logits=None,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class _LinearTokenLogProbs(torch.autograd.Function):
    """``log_softmax(hidden @ weight.T)[i, targets[i]]`` per row, chunk by chunk.

    Unlike the summed cross-entropy above, each row's gradient scale is known only in backward
    (preference losses weigh sequences differently), so backward recomputes each chunk's logits:
    one extra matmul instead of holding ``[tokens, vocab]`` float32 probabilities.
    """

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int
    ) -> torch.Tensor:
        w = weight.to(hidden.dtype)
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            logits = (hidden[start : start + chunk] @ w.T).float()
            picked = logits.gather(1, targets[start : start + chunk, None]).squeeze(1)
            out[start : start + chunk] = picked - torch.logsumexp(logits, dim=-1)
            del logits
        ctx.save_for_backward(hidden, weight, targets)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, targets = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        w = weight.to(hidden.dtype)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        )
        for start in range(0, hidden.shape[0], ctx.chunk):
            h = hidden[start : start + ctx.chunk]
            y = targets[start : start + ctx.chunk]
            g = grad_output[start : start + ctx.chunk].float()
            logits = (h @ w.T).float()
            # d logp_y / d logits = onehot(y) - softmax; scaled by each row's incoming gradient
            d_logits = torch.softmax(logits, dim=-1).mul_(-g[:, None])
            d_logits[torch.arange(y.shape[0], device=y.device), y] += g
            d_logits = d_logits.to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + ctx.chunk] = d_logits @ w
            if grad_weight is not None:
                grad_weight += d_logits.T.float() @ h.float()
            del logits, d_logits
        gw = grad_weight.to(weight.dtype) if grad_weight is not None else None
        return grad_hidden, gw, None, None


def chunked_token_log_probs(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, chunk_size: int | None = None
) -> torch.Tensor:
    """Log-probability of each target token under ``hidden @ weight.T``, never holding all logits."""
    rows = chunk_size or chunk_rows(weight.shape[0])
    return _LinearTokenLogProbs.apply(hidden, weight, targets, rows)


def sequence_log_probs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    **model_inputs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each row's labelled tokens, and how many there are.

    Runs the causal LM's decoder once for all rows and projects only the labelled positions
    through the output layer in chunks; a model whose head is not a plain projection (see
    :func:`chunked_loss_blocker`) runs its own forward and full logits instead.
    """
    causal_lm = _causal_lm(model)
    shift_labels = nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    trained = shift_labels != IGNORE_INDEX
    counts = trained.sum(dim=-1)
    if _plain_head(causal_lm):
        hidden = causal_lm.base_model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **model_inputs
        ).last_hidden_state
        rows, cols = trained.nonzero(as_tuple=True)
        token_logps = chunked_token_log_probs(
            hidden[rows, cols], causal_lm.get_output_embeddings().weight, shift_labels[rows, cols]
        )
    else:
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **model_inputs
        ).logits
        rows, cols = trained.nonzero(as_tuple=True)
        picked = logits[rows, cols].float()
        token_logps = picked.gather(1, shift_labels[rows, cols, None]).squeeze(1) - picked.logsumexp(-1)
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=token_logps.device)
    return sums.index_add(0, rows, token_logps), counts


def _plain_head(causal_lm: nn.Module) -> TypeGuard[PreTrainedModel]:
    """Whether the chunked projection equals the model's own logits (checked once per model)."""
    cached = vars(causal_lm).get("_lmforge_plain_head")
    if cached is None:
        reason = chunked_loss_blocker(causal_lm)
        if reason:
            logger.warning("chunked log-probabilities off (the full logits are held): %s", reason)
        cached = reason is None
        vars(causal_lm)["_lmforge_plain_head"] = cached
    return bool(cached)
