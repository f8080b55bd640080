"""Peak memory and step time of a training run, predicted before any weights load.

Everything comes from the model's ``config.json`` (through ``AutoConfig``, no weights), the
encoded dataset's token counts and two measurements of this machine: the process's resident
memory now (Python, torch, transformers and the data, already loaded) and the matmul rate of
the training dtype at the run's own matrix sizes. The parts are the ones a user can act on:
weights, trainable parameters, their gradients and optimizer states, activations (with and
without gradient checkpointing) and the loss's logits. A run that would not fit says so before
it starts, naming the keys that shrink it.
"""

from __future__ import annotations

import logging
import resource
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from lmforge.config import Config, hardware
from lmforge.templates.results import IGNORE_INDEX

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PretrainedConfig

logger = logging.getLogger(__name__)

MIB = 2**20
HEADROOM = 0.85  # a run "fits" when it needs at most this share of the free memory
CHUNK_ELEMENTS = 2**25  # lmforge.model.loss: float32 logits per chunk of the chunked loss
LORA_TARGETS_ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# bytes of optimizer state per trainable parameter (fp32 states)
OPTIMIZER_STATE_BYTES = {"adamw": 8, "adam": 8, "lion": 4, "sgd": 0, "adafactor": 0, "rmsprop": 4}
# the share of a step's time the matmuls take (the rest: norms, activations, softmax, the optimizer);
# an assumption, not yet calibrated: the shared dev machine was too loaded to measure it (bench/RESULTS.md)
MATMUL_SHARE = 0.6
STATS_ROWS = 4096  # rows of the dataset the token counts are read from
MODULES_PER_BLOCK = 14
# glibc's malloc keeps the forward's freed temporaries: besides the tensors autograd saves, the
# process holds about as much again that it freed but malloc did not hand back (SmolLM2 LoRA runs,
# bench/RESULTS.md "Issue 15": 0.82-0.94x the saved tensors in four probes, 0.02x in one batch of one
# row; with MALLOC_MMAP_THRESHOLD_=65536 it is gone). Counted once over, the safe side for `auto`.
RETAINED_SHARE = 1.0
RETAINED_PART = "freed, kept by malloc"  # seven linear layers, two norms, rotary, attention, activation, two residual adds


@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide memory and FLOPs, read from a transformers config."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> ModelShape:
        text = getattr(config, "text_config", None) or config  # multimodal: the language model
        hidden = text.hidden_size
        heads = text.num_attention_heads
        return cls(
            hidden=hidden,
            layers=text.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(text, "num_key_value_heads", None) or heads,
            head_dim=getattr(text, "head_dim", None) or hidden // heads,
            intermediate=getattr(text, "intermediate_size", None) or 4 * hidden,
            vocab=text.vocab_size,
            tied=bool(getattr(config, "tie_word_embeddings", False)),
        )

    @property
    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder block (LLaMA/Qwen naming)."""
        q, kv, h, i = (
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.hidden,
            self.intermediate,
        )
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def block_matmul_params(self) -> int:
        return sum(a * b for a, b in self.linear_shapes.values())

    @property
    def parameters(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        norms = self.hidden * (2 * self.layers + 1)
        return self.layers * self.block_matmul_params + embeddings + norms

    def lora_parameters(self, rank: int, targets: list[str]) -> int:
        names = LORA_TARGETS_ALL if "all" in targets else [t for t in targets if t in self.linear_shapes]
        return self.layers * sum(rank * sum(self.linear_shapes[n]) for n in names)

    def activation_elements_per_token(
        self, lora_elements: int, *, full: bool, eager: bool, row: int, padded: bool
    ) -> int:
        """Elements one decoder block keeps for backward, per token, as autograd saves them (counted
        tensor by tensor on SmolLM2 with transformers 5, tests/train/test_estimate.py): each RMSNorm's
        input and weighted output, the latter the next linear layers' input (4 hidden); SDPA's query,
        key, value and output and a log-sum-exp per head; the MLP's gate, up, activation and product
        (4 intermediate); each LoRA B's rank-sized input (``lora_elements``). With a padding mask
        transformers repeats k and v to every head and SDPA keeps the float mask (``row`` per token).
        Full fine-tuning also keeps each norm's normalised input, for the norm weight's gradient."""
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        kv_kept = q if (padded or eager) and kv < q else kv
        per_token = 4 * self.hidden + 2 * q + 2 * kv_kept + self.heads + 4 * self.intermediate + lora_elements
        if padded:
            per_token += row
        if full:
            per_token += 2 * self.hidden
        if eager:  # scores and probabilities, [heads, row] per token
            per_token += 2 * self.heads * row
        return per_token


@dataclass(frozen=True)
class Workload:
    """What a step holds: rows of what length, and how many tokens carry a label."""

    batch: int
    accumulation: int
    longest_row: int  # the longest row a micro-batch may hold: its activations decide the peak
    mean_row: float  # padded length of an average row: it decides the step time
    trained_per_row: float  # per sample: a pair counts its chosen and its rejected answer
    steps: int
    rows_per_sample: int = 1  # 2 for pairs (dpo, rm): chosen and rejected run as rows of one batch

    @property
    def rows(self) -> int:
        """Rows of one micro-batch."""
        return self.batch * self.rows_per_sample

    @classmethod
    def from_dataset(cls, config: Config, dataset: Dataset | None, packing: bool) -> Workload:
        kwargs = config.training_kwargs
        batch = int(kwargs.get("per_device_train_batch_size", 8))
        accumulation = int(kwargs.get("gradient_accumulation_steps", 1))
        cutoff = config.data.cutoff_len
        count = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else 0
        columns = (dataset.column_names or ()) if dataset is not None else ()
        sides = [""] if "input_ids" in columns else ["chosen_", "rejected_"]
        if dataset is None or not count or any(f"{side}input_ids" not in columns for side in sides):
            count, lengths, trained = 1, [cutoff], [cutoff / 2 * len(sides)]  # streaming: no counts to read
        else:
            # an evenly spaced sample of at most STATS_ROWS rows keeps this quick on large datasets
            sample = dataset.select(range(0, count, max(1, count // STATS_ROWS)))
            # a pair's two rows are padded to the longer one
            lengths = [
                max(map(len, ids)) for ids in zip(*(sample[f"{s}input_ids"] for s in sides), strict=True)
            ]
            trained = [
                sum(1 for labels in pair for t in labels if t != IGNORE_INDEX)
                for pair in zip(*(sample[f"{s}labels"] for s in sides), strict=True)
            ]
        scale = count / len(lengths)
        if packing:
            rows = max(1, int(-(-sum(lengths) * scale // cutoff)))
            longest, mean, per_row = cutoff, float(cutoff), sum(trained) * scale / rows
        else:
            rows = count
            longest, mean, per_row = max(lengths), sum(lengths) / len(lengths), sum(trained) / len(trained)
        per_step = batch * accumulation
        max_steps = int(kwargs.get("max_steps", -1) or -1)
        epochs = float(kwargs.get("num_train_epochs", 3.0))
        steps = max_steps if max_steps > 0 else max(1, int(-(-rows // per_step) * epochs))
        return cls(batch, accumulation, min(longest, cutoff), min(mean, cutoff), per_row, steps, len(sides))


@dataclass
class Estimate:
    """Predicted peak memory (bytes, by part) and time of one optimizer step."""

    memory: dict[str, float]
    activations_other: float  # activations with checkpointing flipped, for the table
    gradient_checkpointing: bool
    step_flops: float
    matmul_gflops: float
    dtype: torch.dtype
    steps: int
    total_memory: int | None
    free_memory: int | None
    trained_tokens_per_step: float
    advice: list[str] = field(default_factory=list)
    fixed_seconds: float = 0.0  # per-module costs (Python, dispatch, autograd) of one step

    @property
    def peak(self) -> float:
        return sum(self.memory.values())

    @property
    def step_seconds(self) -> float:
        return self.step_flops / (self.matmul_gflops * 1e9) / MATMUL_SHARE + self.fixed_seconds

    @property
    def flops_per_trained_token(self) -> float:
        return self.step_flops / self.trained_tokens_per_step if self.trained_tokens_per_step else 0.0

    def metrics(self) -> dict[str, float]:
        """What all_results.json records of the estimate, beside the measured figures."""
        return {
            "estimated_peak_mib": round(self.peak / MIB, 1),
            # the peak without what malloc may keep: glibc kept 0.82-0.94x the activations in
            # runs on a loaded machine, almost nothing in the same run on a quiet one
            "estimated_peak_low_mib": round((self.peak - self.memory.get(RETAINED_PART, 0.0)) / MIB, 1),
            "estimated_step_seconds": round(self.step_seconds, 3),
            "matmul_peak_gflops": round(self.matmul_gflops, 2),
        }

    @property
    def fits(self) -> bool:
        if self.free_memory is None:
            return True
        return self.peak - self.memory["runtime and data (measured)"] <= HEADROOM * self.free_memory

    def table(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        gc = "on" if self.gradient_checkpointing else "off"
        lines = ["estimate (before loading weights)", f"  {'part':<34}{'MiB':>10}"]
        for part, size in self.memory.items():
            note = ""
            if part.startswith("activations"):
                note = f"   (checkpointing {'off' if self.gradient_checkpointing else 'on'}: {self.activations_other / MIB:,.0f})"
            lines.append(f"  {part:<34}{size / MIB:>10,.0f}{note}")
        total = f"{self.total_memory / MIB:,.0f}" if self.total_memory else "?"
        free = f"{self.free_memory / MIB:,.0f}" if self.free_memory else "?"
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(f"  {'peak':<34}{self.peak / MIB:>10,.0f}   of {total} MiB, {free} free: {verdict}")
        lines.append(
            f"  step: {self.step_flops / 1e12:.2f} TFLOP at {self.matmul_gflops:,.1f} GFLOP/s ({dtype} matmul, "
            f"measured) ~ {self.step_seconds:,.1f} s; {self.steps} steps ~ {self.step_seconds * self.steps / 60:,.1f} min "
            f"(gradient checkpointing {gc})"
        )
        if not self.fits and self.advice:
            lines.append("  to fit: " + "; ".join(self.advice))
        return "\n".join(lines)


def estimate_training(
    config: Config,
    model_config: PretrainedConfig,
    dataset: Dataset | None,
    *,
    packing: bool,
    dtype: torch.dtype,
    gradient_checkpointing: bool | None = None,
    chunked_loss: bool = True,
) -> Estimate:
    """The estimate of a run; ``gradient_checkpointing=None`` picks it as ``auto`` would."""
    shape = ModelShape.from_config(model_config)
    work = Workload.from_dataset(config, dataset, packing)
    fin = config.finetuning
    lora = fin.finetuning_type == "lora"
    weight_bytes = 2 if dtype in (torch.bfloat16, torch.float16) and lora else 4
    if lora:
        trainable = shape.lora_parameters(fin.lora_rank, fin.lora_target)
        lora_modules = len(LORA_TARGETS_ALL) if "all" in fin.lora_target else len(fin.lora_target)
    elif fin.finetuning_type == "full":
        trainable, lora_modules = shape.parameters, 0
    else:  # freeze: the last N blocks
        trainable, lora_modules = fin.freeze_trainable_layers * shape.block_matmul_params, 0
    optimizer = str(config.training_kwargs.get("optim", "adamw_torch"))
    state_bytes = next((b for key, b in OPTIMIZER_STATE_BYTES.items() if optimizer.startswith(key)), 8)

    act_bytes = 2 if dtype in (torch.bfloat16, torch.float16) else 4
    eager = config.model.flash_attn == "disabled"
    tokens = work.rows * work.longest_row
    per_token = shape.activation_elements_per_token(
        fin.lora_rank * lora_modules if lora else 0,
        full=fin.finetuning_type == "full",
        eager=eager,
        row=work.longest_row,
        padded=not packing and work.rows > 1,
    )
    one_block = tokens * per_token * act_bytes
    # without checkpointing the peak is the end of the forward: every block's saved tensors and the
    # loss; with it, each block's input, and in backward one block recomputed
    full_activations = shape.layers * one_block
    checkpointed = shape.layers * tokens * shape.hidden * act_bytes + one_block
    stage = config.finetuning.stage
    trained_rows = min(work.batch * work.trained_per_row, tokens) if chunked_loss else tokens
    if stage == "rm":
        logits = 0  # a score per row, no vocabulary
    elif chunked_loss:
        rows = min(max(1, CHUNK_ELEMENTS // shape.vocab), int(trained_rows) or 1)
        logits = 2 * rows * shape.vocab * 4  # one chunk's logits and logsumexp's shifted copy
    else:
        logits = 3 * tokens * shape.vocab * 4  # logits, their float32 copy, their gradient
    # a no-grad forward (the reference's, KTO's mismatched partners) runs while the policy's graph is
    # held: one block's tensors at a time on top
    no_grad_forwards = _no_grad_forwards(config)
    if no_grad_forwards:
        logits += one_block

    total, free = _device_memory()
    base = {
        # on a GPU the run's memory is the card's: what torch holds there already (the CPU's RSS is apart)
        "runtime and data (measured)": float(
            torch.cuda.memory_reserved() if torch.cuda.is_available() else _current_rss()
        ),
        f"weights ({'bfloat16' if weight_bytes == 2 else 'float32'})": float(shape.parameters * weight_bytes),
        "trainable parameters (float32)": float(trainable * 4) if lora else 0.0,
        "gradients (float32)": float(trainable * 4),
        f"optimizer states ({optimizer})": float(trainable * state_bytes),
    }
    if not lora:
        base.pop("trainable parameters (float32)")
    if _separate_reference(config):
        base["reference model (frozen copy)"] = float(shape.parameters * (2 if act_bytes == 2 else 4))
    retained = RETAINED_SHARE if _malloc_keeps_freed_memory() else 0.0
    without_gc = sum(base.values()) + full_activations * (1 + retained) + logits
    if gradient_checkpointing is None:
        gradient_checkpointing = (
            free is not None and without_gc - base["runtime and data (measured)"] > HEADROOM * free
        )
    activations = checkpointed if gradient_checkpointing else full_activations
    memory = {**base, "activations": float(activations)}
    if retained:
        memory[RETAINED_PART] = float(activations * retained)
    memory["logits (loss)"] = float(logits)

    flops = _step_flops(
        shape,
        work,
        trainable_full=not lora and fin.finetuning_type == "full",
        checkpointing=gradient_checkpointing,
        chunked=chunked_loss,
        no_grad_forwards=no_grad_forwards,
    )
    rate = _matmul_rate(dtype, tokens, shape.hidden)
    modules = shape.layers * (MODULES_PER_BLOCK + 3 * lora_modules) + 10
    fixed = (
        work.accumulation
        * modules
        * hardware.module_call_seconds()
        * (1.5 if gradient_checkpointing else 1.0)
    )
    estimate = Estimate(
        memory=memory,
        activations_other=float(full_activations if gradient_checkpointing else checkpointed),
        gradient_checkpointing=gradient_checkpointing,
        step_flops=flops,
        matmul_gflops=rate,
        dtype=dtype,
        steps=work.steps,
        total_memory=total,
        free_memory=free,
        trained_tokens_per_step=work.batch * work.accumulation * work.trained_per_row,
        fixed_seconds=fixed,
    )
    estimate.advice = _advice(config, estimate, dtype)
    return estimate


def _step_flops(
    shape: ModelShape,
    work: Workload,
    *,
    trainable_full: bool,
    checkpointing: bool,
    chunked: bool,
    no_grad_forwards: int = 0,
) -> float:
    """Matmul FLOPs of one optimizer step: forward 2 per weight per token; backward 2 more for the
    input gradients and, for trained weights, 2 more for the weight gradients; plus the forwards
    that run without gradients (a reference model's)."""
    tokens = work.rows * work.accumulation * work.mean_row
    trained = work.batch * work.accumulation * work.trained_per_row
    block = 2 * shape.layers * shape.block_matmul_params
    attention = 2 * shape.layers * shape.heads * shape.head_dim * work.mean_row  # causal QK^T and AV
    forward = tokens * (block + attention)
    backward = forward * (2 if trainable_full else 1) + tokens * attention
    head = 2 * shape.hidden * shape.vocab * (trained if chunked else tokens)
    recompute = forward if checkpointing else 0.0
    return forward * (1 + no_grad_forwards) + backward + recompute + head * (3 if trainable_full else 2)


def _no_grad_forwards(config: Config) -> int:
    """Forwards of a step's rows run without gradients: the reference (dpo, kto, unless its
    log-probabilities are precomputed) and KTO's mismatched partners (policy and reference)."""
    fin = config.finetuning
    precomputed = fin.precompute_ref_log_probs
    if fin.stage == "dpo":
        return 0 if precomputed or fin.pref_loss in ("orpo", "simpo") else 1
    if fin.stage == "kto":
        return 1 if precomputed else 3
    return 0


def _separate_reference(config: Config) -> bool:
    """Whether the reference is a second frozen model (full or freeze tuning, or ``ref_model``),
    not the policy with its adapter switched off; assumed the size of the policy."""
    fin = config.finetuning
    if not _no_grad_forwards(config) or fin.precompute_ref_log_probs:
        return False
    return bool(fin.ref_model) or fin.finetuning_type != "lora"


def _malloc_keeps_freed_memory() -> bool:
    """glibc's malloc (Linux) keeps the forward's freed temporaries in the process; a GPU's
    activations live on the card, where torch's caching allocator is counted as reserved."""
    import platform

    return not torch.cuda.is_available() and platform.libc_ver()[0] == "glibc"


def _advice(config: Config, estimate: Estimate, dtype: torch.dtype) -> list[str]:
    """The keys that shrink the run, in the order they cost least."""
    out = []
    if not estimate.gradient_checkpointing:
        out.append("gradient_checkpointing: true")
    batch = int(config.training_kwargs.get("per_device_train_batch_size", 8))
    if batch > 1:
        out.append(
            f"per_device_train_batch_size: {max(1, batch // 2)} with gradient_accumulation_steps: "
            f"{2 * int(config.training_kwargs.get('gradient_accumulation_steps', 1))}"
        )
    out.append(f"cutoff_len: {max(16, config.data.cutoff_len // 2)}")
    if config.finetuning.finetuning_type != "lora":
        out.append("finetuning_type: lora")
    elif config.finetuning.lora_rank > 8:
        out.append(f"lora_rank: {config.finetuning.lora_rank // 2}")
    if dtype == torch.float32 and (torch.cuda.is_available() or hardware.cpu_bf16_support().native):
        out.append("bf16: true")
    return out


def _matmul_rate(dtype: torch.dtype, tokens: int, hidden: int) -> float:
    if torch.cuda.is_available():
        return _cuda_rate(dtype, tokens, hidden)
    # at least 256 wide: below that the per-call cost, counted apart as fixed_seconds, would dominate
    size = max(256, hidden)
    return hardware.matmul_rate(dtype, (max(256, min(tokens, 2048)), size, size), budget_s=0.2)


def _cuda_rate(dtype: torch.dtype, tokens: int, hidden: int) -> float:
    import time

    a = torch.randn(min(tokens, 8192), hidden, device="cuda", dtype=dtype)
    b = torch.randn(hidden, hidden, device="cuda", dtype=dtype)
    a @ b
    torch.cuda.synchronize()
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < 0.1:
        a @ b
        runs += 1
    torch.cuda.synchronize()
    return 2 * a.shape[0] * hidden * hidden * runs / (time.perf_counter() - start) / 1e9


def _device_memory() -> tuple[int | None, int | None]:
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return total, free
    return hardware.memory_bytes()


def _current_rss() -> int:
    """Resident memory of this process now (Linux: /proc/self/statm), else its peak so far."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize()
    except OSError:
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def estimate_run(
    config: Config, dataset: Dataset | None, *, dtype: torch.dtype, packing: bool, log_table: bool = True
) -> Estimate | None:
    """The estimate a training run logs first; None when the model's config cannot be read (the
    model load then reports why). It settles ``gradient_checkpointing: auto``."""
    from transformers import AutoConfig

    from lmforge.model.loader import model_path

    try:
        model_config = AutoConfig.from_pretrained(
            model_path(config.model), trust_remote_code=config.model.trust_remote_code
        )
        estimate = estimate_training(
            config,
            model_config,
            dataset,
            packing=packing,
            dtype=dtype,
            gradient_checkpointing=checkpointing_setting(config),
            chunked_loss=config.finetuning.chunked_loss,
        )
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        logger.info("no memory/time estimate for this model: %s", exc)
        return None
    if log_table:
        logger.info("%s", estimate.table())
    if not estimate.fits:
        logger.warning(
            "the estimate says this run needs %.0f MiB, more than the %.0f MiB free; to make it fit, set %s",
            estimate.peak / MIB,
            (estimate.free_memory or 0) / MIB,
            ", ".join(estimate.advice) or "a smaller model",
        )
    return estimate


def checkpointing_setting(config: Config) -> bool | None:
    """``gradient_checkpointing`` as set (true/false), or None for ``auto`` (decided by the estimate);
    ``disable_gradient_checkpointing: true`` keeps LLaMA-Factory's meaning, off."""
    setting = config.finetuning.gradient_checkpointing
    if setting != "auto":
        return bool(setting)
    return False if config.model.disable_gradient_checkpointing else None


def use_checkpointing(config: Config, estimate: Estimate | None) -> bool:
    """The answer for the run: the setting, or the estimate's choice under ``auto``."""
    if estimate is not None:
        return estimate.gradient_checkpointing
    return bool(checkpointing_setting(config))
