"""The steps every training stage shares, in the order a stage's recipe calls them.

A recipe (train/sft.py, train/dpo.py, train/kto.py, train/rm.py) reads top to bottom:

    run = start(config, callbacks)          # arguments, output folder, tokenizer, template
    data = load_data(run, data)             # encoded datasets (None: tokenized_path only)
    train_set, eval_set = arrange(run, data) # packed, or with the length column
    model = load_training_model(run, train_set)
    trainer = <the stage's Trainer>(**trainer_inputs(run, model, train_set, eval_set, collator), ...)
    return finish(run, trainer)             # train, metrics, eval, saved outputs

The order matters for the user: the output folder is checked before anything slow happens,
then the tokenizer, template and data are prepared (so data errors appear before the model
loads), then the model and adapters; transformers' Trainer runs the loop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
from datasets import IterableDataset
from peft import PeftModel
from transformers import AutoConfig, set_seed
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from lmforge.config import Config
from lmforge.data import load_sft_datasets
from lmforge.data.batching import pack_dataset
from lmforge.data.loader import is_saved_bundle
from lmforge.data.preference import PAIRWISE_STAGES, PREFERENCE_STAGES
from lmforge.errors import ConfigError
from lmforge.media.models import media_processing_for
from lmforge.model.adapter import (
    enable_gradient_checkpointing,
    prepare_trainable,
    save_converted_pissa,
    save_pissa_initial,
)
from lmforge.model.loader import load_model, load_tokenizer, model_path
from lmforge.templates import resolve_template
from lmforge.train.callbacks import JsonlLog, ProgressBar, SignalStop
from lmforge.train.estimate import Estimate, estimate_run, use_checkpointing
from lmforge.train.optimizers import configure_optimizer, optimizer_arguments
from lmforge.train.outputs import move_contents, plot_losses, resolve_resume, write_json
from lmforge.train.trainer import LmforgeTrainer, Throughput

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import (
        PreTrainedTokenizerBase,
        Seq2SeqTrainingArguments,
        TrainerCallback,
    )

    from lmforge.data.encoding import DataReport
    from lmforge.media.inputs import MediaProcessing
    from lmforge.model.adapter import TrainableModel
    from lmforge.templates import ChatTemplate

    TrainSet: TypeAlias = Dataset | IterableDataset  # streaming runs train on an IterableDataset

logger = logging.getLogger(__name__)

FINAL_STAGING = ".staging-final"


@dataclass
class PreparedData:
    """Encoded datasets (``input_ids``/``labels``) as ``lmforge.data.load_sft_datasets`` returns them."""

    train: Dataset | IterableDataset
    eval: Dataset | IterableDataset | None = None
    report: DataReport | None = None


@dataclass
class TrainingOutcome:
    output_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    interrupted_by: int | None = None  # the signal that stopped training early
    checkpoint: str | None = None  # where it was saved then

    @property
    def exit_code(self) -> int:
        return 128 + self.interrupted_by if self.interrupted_by else 0


@dataclass
class Run:
    """What one training run has settled so far; each step of a recipe adds to it."""

    config: Config
    args: Seq2SeqTrainingArguments
    resume: str | None
    tokenizer: PreTrainedTokenizerBase
    template: ChatTemplate
    media: MediaProcessing | None
    callbacks: Sequence[TrainerCallback] = ()
    throughput: Throughput = field(default_factory=Throughput)
    stopper: SignalStop = field(default_factory=SignalStop)
    optimizer: torch.optim.Optimizer | None = None  # None: transformers builds the one args name
    estimate: Estimate | None = None
    gradient_checkpointing: bool = False
    chunked_loss: bool = False
    pissa_initial: Path | None = None

    @property
    def output_dir(self) -> Path:
        return Path(str(self.args.output_dir))  # required: training_arguments refuses a config without it

    @property
    def stage(self) -> str:
        return self.config.finetuning.stage


def start(config: Config, callbacks: Sequence[TrainerCallback] = ()) -> Run:
    """The finished training arguments, the output folder's resume point, the tokenizer and template."""
    args = training_arguments(config)
    if config.finetuning.logging_dir:  # transformers 5's TensorBoard callback reads only this variable
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(config.finetuning.logging_dir).expanduser())
    resume = resolve_resume(
        str(args.output_dir),
        config.training_kwargs.get("resume_from_checkpoint"),
        overwrite=config.finetuning.overwrite_output_dir,
    )
    tokenizer = load_tokenizer(config.model)
    template = _set_chat_template(config, tokenizer)
    return Run(config, args, resume, tokenizer, template, training_media(config), callbacks)


def load_data(run: Run, data: PreparedData | None = None) -> PreparedData | None:
    """The encoded datasets (``data`` when given); None when this run only encodes them (``tokenized_path``)."""
    config = run.config
    tokenizing_only = data is None and _tokenizing_only(config)
    with run.args.main_process_first(desc="preparing the datasets"):
        data = data or _load_data(config, run.tokenizer, run.template, run.media)
    if tokenizing_only:  # LLaMA-Factory's preprocessing run: encode, save, stop
        logger.info(
            "the encoded datasets are saved in %s; run again with the same tokenized_path to train from them",
            config.data.tokenized_path,
        )
        return None
    return data


def training_arguments(config: Config) -> Seq2SeqTrainingArguments:
    """transformers' arguments with lmforge's fixed choices on top: the only place they are built.

    Everything here follows from the config alone, so the arguments are finished before any
    data or weights load. Gradient checkpointing is not among them: the estimate decides it once
    the data is known, and ``load_training_model`` applies it to the model itself.
    """
    if not config.training_kwargs.get("output_dir"):
        raise ConfigError(
            "config key 'output_dir' is required: the folder for checkpoints and the trained model"
        )
    given = config.training_kwargs
    fixed: dict[str, Any] = {
        "remove_unused_columns": False,  # our collators pick the columns they need
        "label_names": ["labels"],
        "gradient_checkpointing": False,  # applied to the model (see the docstring)
        **optimizer_arguments(config),  # GaLore/APOLLO through transformers' optim keys
    }
    if config.finetuning.stage in PREFERENCE_STAGES:
        fixed["prediction_loss_only"] = True  # eval reports the loss and rewards/*, no logits
    defaults: dict[str, Any] = {"ddp_find_unused_parameters": False}
    if not torch.cuda.is_available():
        # accelerate sets up torchrun's processes (gloo) on a CPU only when told it runs on the CPU
        defaults["use_cpu"] = True
        defaults["dataloader_pin_memory"] = False
    strategy = _sampling_strategy(config)
    if strategy is not None:
        defaults["train_sampling_strategy"] = strategy
    kwargs = {**defaults, **given, **fixed}
    return dataclasses.replace(config, training_kwargs=kwargs).training_arguments()


def _sampling_strategy(config: Config) -> str | None:
    """How batches are drawn unless ``train_sampling_strategy`` is set; None: transformers' default."""
    if config.finetuning.disable_shuffling:
        return "sequential"
    if config.finetuning.stage == "kto":
        return "random"  # length groups would split desirable from undesirable
    if config.data.streaming:
        return "random"  # a stream is consumed in order: nothing to group
    if not packing_enabled(config):
        return "group_by_length"  # little padding without packing
    return None


def packing_enabled(config: Config) -> bool:
    """``packing`` as set; unset means on for pre-training (stage pt) and off for sft, as in LLaMA-Factory."""
    if config.data.neat_packing:
        return True
    if config.data.packing is None:
        return config.finetuning.stage == "pt" and not config.data.streaming
    return config.data.packing


def training_dtype(config: Config, args: Seq2SeqTrainingArguments) -> torch.dtype:
    if args.bf16 or (config.finetuning.pure_bf16 and torch.cuda.is_available()):
        return torch.bfloat16
    if args.fp16:
        return torch.float16
    return torch.float32


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (and of the GPU, when used), in MiB."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    out = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)}
    if torch.cuda.is_available():
        out["peak_gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["peak_gpu_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return out


def _set_chat_template(config: Config, tokenizer: PreTrainedTokenizerBase) -> ChatTemplate:
    """Resolve the template and write its jinja form into the tokenizer (saved with every checkpoint)."""
    template = resolve_template(config.data.template, tokenizer)
    tokenizer.chat_template = template.jinja_chat_template()
    return template


def training_media(config: Config) -> MediaProcessing | None:
    """The media processing of a multimodal model (Qwen2-VL, Qwen2.5-VL, Qwen2-Audio); None for text models."""
    path = model_path(config.model)
    try:
        model_config = AutoConfig.from_pretrained(path, trust_remote_code=config.model.trust_remote_code)
    except (OSError, ValueError):
        return None  # the model load reports it, with the reason
    return media_processing_for(model_config, path, config.model)


def _load_data(
    config: Config,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate,
    media: MediaProcessing | None = None,
) -> PreparedData:
    bundle = load_sft_datasets(
        config, tokenizer, template, config.finetuning.stage, media=media, packing=packing_enabled(config)
    )
    return PreparedData(train=bundle.train, eval=bundle.eval, report=bundle.report)


def _tokenizing_only(config: Config) -> bool:
    """``tokenized_path`` names a folder with no encoded data yet: this run only encodes and saves it."""
    path = config.data.tokenized_path
    if not path or config.data.streaming:
        return False
    return not is_saved_bundle(Path(path))


def arrange(run: Run, data: PreparedData) -> tuple[TrainSet, TrainSet | None]:
    """Pack, or add the length column the length-bucketed sampler reads (train/trainer.py)."""
    config, args = run.config, run.args
    if isinstance(data.train, IterableDataset):  # streaming: consumed in order, nothing to pack or group
        return data.train, data.eval
    if data.train is None or len(data.train) == 0:
        raise ConfigError("no training samples: check dataset, max_samples and cutoff_len")
    sets: list[Any] = [data.train, data.eval]
    if packing_enabled(config):
        sets = [pack_dataset(s, config.data.cutoff_len)[0] if s is not None else None for s in sets]
    elif args.train_sampling_strategy == "group_by_length":
        column = args.length_column_name
        sets = [
            s.map(lambda batch: {column: _row_lengths(batch)}, batched=True, desc="lengths")
            if s is not None
            else None
            for s in sets
        ]  # transformers' eval sampler groups by length too
    return sets[0], sets[1]


def _row_lengths(batch: dict[str, list[Any]]) -> list[int]:
    """Tokens per row: a sample's, or a pair's longer answer (pairs are padded to it)."""
    if "input_ids" in batch:
        return [len(ids) for ids in batch["input_ids"]]
    return [
        max(len(c), len(r))
        for c, r in zip(batch["chosen_input_ids"], batch["rejected_input_ids"], strict=True)
    ]


def load_training_model(run: Run, train_set: TrainSet) -> TrainableModel:
    """The estimate (no weights yet), then the model with its trainable weights, checkpointing and
    pad token; the PiSSA start is saved now, before training changes it."""
    config, args = run.config, run.args
    dtype = training_dtype(config, args)
    run.estimate = estimate_run(config, train_set, dtype=dtype, packing=packing_enabled(config))
    set_seed(args.seed)  # adapter initialisation is random: same seed, same run
    model: TrainableModel = load_model(
        config.model,
        config.finetuning,
        trainable=True,
        dtype=dtype,
        num_labels=1 if run.stage == "rm" else None,  # the reward model's scalar head
    )
    model.config.use_cache = (
        False  # a cache in training turns off the packed-sequence masks, and wastes memory
    )
    if run.stage in PREFERENCE_STAGES:
        model.config.pad_token_id = run.tokenizer.pad_token_id  # the reward model's score reads it
    run.gradient_checkpointing = use_checkpointing(config, run.estimate) and bool(
        getattr(model, "supports_gradient_checkpointing", False)
    )
    model = prepare_trainable(
        model, config.model, config.finetuning, gradient_checkpointing=run.gradient_checkpointing
    )
    if run.gradient_checkpointing:
        settings = args.gradient_checkpointing_kwargs  # a dict once transformers has parsed it
        if not isinstance(settings, dict) or not settings:
            settings = {"use_reentrant": config.model.use_reentrant_gc}
        enable_gradient_checkpointing(model, settings)
    run.optimizer = configure_optimizer(config, args, model)
    if args.should_save:
        run.pissa_initial = save_pissa_initial(model, config.finetuning, run.output_dir)
    return model


def chunked_loss_allowed(run: Run) -> bool:
    """``chunked_loss`` as set, unless parameters are sharded (DeepSpeed ZeRO-3, FSDP) or eval needs logits."""
    if not run.config.finetuning.chunked_loss:
        return False
    if is_deepspeed_zero3_enabled() or run.args.fsdp:
        logger.warning(
            "chunked cross-entropy off (the full logits are held): parameters are sharded (ZeRO-3/FSDP)"
        )
        return False
    if run.args.predict_with_generate:
        logger.warning(
            "chunked cross-entropy off (the full logits are held): predict_with_generate needs logits"
        )
        return False
    return True


def trainer_inputs(
    run: Run,
    model: TrainableModel,
    train_set: TrainSet,
    eval_set: TrainSet | None,
    collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
) -> dict[str, Any]:
    """The keyword arguments every stage's Trainer takes: the same arguments, callbacks and optimizer."""
    estimate = run.estimate
    if estimate is not None:  # MFU in the progress bar, the log and all_results.json
        run.throughput.flops_per_token = estimate.flops_per_trained_token
        run.throughput.peak_flops = estimate.matmul_gflops * 1e9
    logger.info("loss: %s cross-entropy", "chunked" if run.chunked_loss else "plain")
    return {
        "model": model,
        "args": run.args,
        "train_dataset": train_set,
        "eval_dataset": eval_set,
        "data_collator": collator,
        "processing_class": run.tokenizer,
        "callbacks": [JsonlLog(str(run.output_dir), run.throughput), run.stopper, *run.callbacks],
        "throughput": run.throughput,
        "optimizers": (run.optimizer, None),
    }


def finish(
    run: Run, trainer: LmforgeTrainer, before_save: Callable[[], None] | None = None
) -> TrainingOutcome:
    """Train (a signal saves a checkpoint and stops), then the metrics, eval and the saved outputs."""
    config, args, output_dir, throughput = run.config, run.args, run.output_dir, run.throughput
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(ProgressBar(throughput))
    stopper = run.stopper
    stopper.install()
    try:
        result = trainer.train(resume_from_checkpoint=run.resume)
    finally:
        stopper.uninstall()
    if stopper.stopped_at is not None:
        checkpoint = str(output_dir / f"checkpoint-{stopper.stopped_at}")
        name = signal.Signals(stopper.received or signal.SIGTERM).name
        logger.warning(
            "stopped by %s; checkpoint saved in %s (run again to resume from it)", name, checkpoint
        )
        return TrainingOutcome(output_dir, interrupted_by=stopper.received, checkpoint=checkpoint)

    metrics: dict[str, Any] = dict(result.metrics)
    tokens = trainer.global_count(throughput.tokens)
    samples = trainer.global_count(throughput.samples)
    runtime = metrics.get("train_runtime") or 0.0
    metrics.update(
        trained_tokens=tokens,
        trained_samples=samples,
        trained_tokens_per_second=round(tokens / runtime, 3) if runtime else None,
        trained_samples_per_second=round(samples / runtime, 3) if runtime else None,
        global_step=result.global_step,
        packing=packing_enabled(config),
        chunked_loss=run.chunked_loss,
        gradient_checkpointing=run.gradient_checkpointing,
        **peak_memory(),
    )
    if run.estimate is not None:
        mfu = throughput.mfu(metrics["trained_tokens_per_second"] or 0.0)
        metrics.update(run.estimate.metrics(), mfu=round(mfu, 4) if mfu is not None else None)
    if run.stage in PAIRWISE_STAGES:  # a pair is two trained sequences
        metrics.update(
            trained_pairs=samples // 2,
            trained_pairs_per_second=round(samples / 2 / runtime, 3) if runtime else None,
        )
    if trainer.eval_dataset is not None and args.do_eval:
        metrics.update(trainer.evaluate(metric_key_prefix="eval"))
    if before_save is not None:
        before_save()
    _save_outputs(trainer, config, output_dir, metrics, run.pissa_initial)
    return TrainingOutcome(output_dir, metrics=metrics)


def _save_outputs(
    trainer: LmforgeTrainer,
    config: Config,
    output_dir: Path,
    metrics: dict[str, Any],
    pissa_initial: Path | None = None,
) -> None:
    """Model (or adapter), tokenizer, state, results and plots, each written under a temporary name first."""
    staging = output_dir / FINAL_STAGING
    trainer.save_model(str(staging))  # every process joins (DeepSpeed/FSDP gather); the main one writes
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return
    if pissa_initial is not None and isinstance(trainer.model, PeftModel):  # PiSSA: a LoRA run
        save_converted_pissa(trainer.model, staging, pissa_initial)
    trainer.state.save_to_json(str(staging / "trainer_state.json"))
    move_contents(staging, output_dir)
    results = {"train": {k: v for k, v in metrics.items() if not k.startswith("eval_")}}
    write_json(output_dir / "train_results.json", results["train"])
    eval_metrics = {k: v for k, v in metrics.items() if k.startswith("eval_")}
    if eval_metrics:
        write_json(output_dir / "eval_results.json", eval_metrics)
    write_json(output_dir / "all_results.json", metrics)
    if config.finetuning.plot_loss:
        plot_losses(trainer.state.log_history, output_dir)
    logger.info(
        "trained %s tokens (%.1f tokens/s); the %s is in %s",
        metrics.get("trained_tokens"),
        metrics.get("trained_tokens_per_second") or 0.0,
        "adapter" if config.finetuning.finetuning_type == "lora" else "model",
        output_dir,
    )
