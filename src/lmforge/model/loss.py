"""Causal-LM cross-entropy computed in chunks, so the ``[tokens, vocab]`` float32 logits never exist at once.

Qwen's vocabulary has 151k entries: for a batch of 8 x 1024 tokens the plain loss holds a 5 GB
float32 logits tensor (plus its gradient). Here the loss is computed from the final hidden
states and the output-embedding weight a few hundred rows at a time, only over the positions
that carry a label, and the gradients are formed chunk by chunk in the same pass. The result
equals transformers' ``ForCausalLMLoss`` (sum over trained tokens divided by
``num_items_in_batch``, or their count) up to float rounding.

``enable_chunked_loss(model)`` swaps the loss into a causal LM's forward when the model's head
is the plain ``lm_head(hidden_states)`` projection (no bias, soft-capping, scaling or router
loss); otherwise it leaves the model alone and says why.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lmforge.templates.results import IGNORE_INDEX

logger = logging.getLogger(__name__)

CHUNK_ELEMENTS = 2**25  # float32 logits per chunk: 128 MiB
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
_FORWARD_MARKERS = ("self.lm_head(hidden_states[:, slice_indices, :])", "self.loss_function(")
_FORWARD_EXTRAS = ("aux_loss", "softcap", "logit_scale", "logits_scaling")


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
    """Why the chunked loss would not equal this model's own loss, or None when it does."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        return f"{type(model).__name__} is not a transformers model"
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder models compute their loss differently"
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
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
    if not isinstance(getattr(model, "model", None), nn.Module):
        return "the model has no `model` decoder attribute"
    try:
        source = inspect.getsource(type(model).forward)
    except (OSError, TypeError):
        return "the model's forward source is not available to check"
    if not all(marker in source for marker in _FORWARD_MARKERS) or any(x in source for x in _FORWARD_EXTRAS):
        return f"{type(model).__name__}.forward is not the standard lm_head + loss_function shape"
    return None


def enable_chunked_loss(model: nn.Module) -> bool:
    """Compute the training loss of ``model`` (a causal LM, or a PEFT model around one) in chunks.

    Only calls with ``labels`` change; generation and label-free calls run the model's own
    forward. Returns False, logging why, when the chunked loss would not be correct.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    reason = chunked_loss_blocker(causal_lm)
    if reason:
        logger.info("chunked cross-entropy off: %s", reason)
        return False
    if getattr(causal_lm, "_lmforge_chunked_loss", False):
        return True
    causal_lm.forward = _chunked_forward(causal_lm, causal_lm.forward)
    causal_lm._lmforge_chunked_loss = True
    return True


def disable_chunked_loss(model: nn.Module) -> None:
    """Undo :func:`enable_chunked_loss` (the class's forward applies again)."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(causal_lm, "_lmforge_chunked_loss", False):
        del causal_lm.forward
        causal_lm._lmforge_chunked_loss = False


def _chunked_forward(causal_lm: nn.Module, original: Callable[..., Any]) -> Callable[..., Any]:
    from transformers.modeling_outputs import CausalLMOutputWithPast

    def forward(
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> Any:
        shift_labels = kwargs.pop("shift_labels", None)
        if labels is None and shift_labels is None:
            return original(
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
        outputs = causal_lm.model(
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
            causal_lm.get_output_embeddings().weight,
            labels,
            shift_labels=shift_labels,
            num_items_in_batch=num_items_in_batch,
        )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=None,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    return forward


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
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    shift_labels = nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    trained = shift_labels != IGNORE_INDEX
    counts = trained.sum(dim=-1)
    if _plain_head(causal_lm):
        hidden = causal_lm.model(
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


def _plain_head(causal_lm: nn.Module) -> bool:
    """Whether the chunked projection equals the model's own logits (checked once per model)."""
    cached = getattr(causal_lm, "_lmforge_plain_head", None)
    if cached is None:
        reason = chunked_loss_blocker(causal_lm)
        if reason:
            logger.info("chunked log-probabilities off: %s", reason)
        cached = reason is None
        causal_lm._lmforge_plain_head = cached
    return cached
