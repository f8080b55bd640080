"""One training run, from a ``Config`` to the files in ``output_dir`` (every stage: sft, pt, dpo, kto, rm).

The order matters for the user: the output folder is checked before anything slow happens,
then the tokenizer, template and data are prepared (so data errors appear before the model
loads), then the model, adapters and loss; transformers' Trainer runs the loop.
"""

from __future__ import annotations

import logging
import resource
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmforge.config import Config
from lmforge.data.batching import TrainingCollator, pack_dataset
from lmforge.errors import ConfigError
from lmforge.model.adapter import save_converted_pissa, save_pissa_initial
from lmforge.train.callbacks import JsonlLog, ProgressBar, SignalStop, Throughput
from lmforge.train.estimate import estimate_run, use_checkpointing
from lmforge.train.optimizers import configure_optimizer
from lmforge.train.outputs import move_contents, plot_losses, resolve_resume, write_json
from lmforge.train.stage import PREFERENCE_STAGES, StageParts

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase, Seq2SeqTrainingArguments, TrainerCallback

    from lmforge.templates import ChatTemplate

logger = logging.getLogger(__name__)

FINAL_STAGING = ".staging-final"
PAIRWISE_STAGES = ("dpo", "rm")


@dataclass
class PreparedData:
    """Encoded datasets (``input_ids``/``labels``) as ``lmforge.data.load_sft_datasets`` returns them."""

    train: Dataset
    eval: Dataset | None = None
    report: Any = None


@dataclass
class TrainingOutcome:
    output_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    interrupted_by: int | None = None  # the signal that stopped training early
    checkpoint: str | None = None  # where it was saved then

    @property
    def exit_code(self) -> int:
        return 128 + self.interrupted_by if self.interrupted_by else 0


def run_training(
    config: Config,
    *,
    callbacks: Sequence[TrainerCallback] = (),
    data: PreparedData | None = None,
) -> TrainingOutcome:
    """Train as ``config`` says; ``data`` replaces dataset loading (tests, notebooks)."""
    args = training_arguments(config)
    output_dir = Path(args.output_dir)
    resume = resolve_resume(
        args.output_dir,
        config.training_kwargs.get("resume_from_checkpoint"),
        overwrite=config.finetuning.overwrite_output_dir,
    )
    from lmforge.model.loader import load_tokenizer

    tokenizer = load_tokenizer(config.model)
    template = _set_chat_template(config, tokenizer)
    media = training_media(config)
    tokenizing_only = data is None and _tokenizing_only(config)
    with args.main_process_first(desc="preparing the datasets"):
        data = data or _load_data(config, tokenizer, template, media)
    if tokenizing_only:  # LLaMA-Factory's preprocessing run: encode, save, stop
        logger.info(
            "the encoded datasets are saved in %s; run again with the same tokenized_path to train from them",
            config.data.tokenized_path,
        )
        return TrainingOutcome(output_dir)
    train_set, eval_set = _arrange(config, args, data)

    from transformers import set_seed

    dtype = training_dtype(config, args)
    estimate = estimate_run(config, train_set, dtype=dtype, packing=packing_enabled(config))  # no weights yet
    set_seed(args.seed)  # adapter initialisation is random: same seed, same run
    model, chunked = _load_model(config, args, use_checkpointing(config, estimate))
    optimizer = configure_optimizer(config, args, model)  # None: transformers builds the one args name
    pissa_initial = save_pissa_initial(model, config.finetuning, output_dir) if args.should_save else None
    if config.finetuning.stage in PREFERENCE_STAGES:
        model.config.pad_token_id = tokenizer.pad_token_id  # the reward model's score reads it
        parts = preference_stage(config.finetuning.stage).prepare(
            config, args, tokenizer, model, train_set, eval_set, media=media
        )
    else:
        parts = _sft_parts(config, model, tokenizer, media, train_set, eval_set)

    throughput = Throughput()
    if estimate is not None:  # MFU in the progress bar, the log and all_results.json
        throughput.flops_per_token = estimate.flops_per_trained_token
        throughput.peak_flops = estimate.matmul_gflops * 1e9
    stopper = SignalStop()
    trainer = parts.trainer_class(
        model=parts.model,
        args=args,
        train_dataset=parts.train,
        eval_dataset=parts.eval,
        data_collator=parts.collator,
        processing_class=tokenizer,
        callbacks=[JsonlLog(args.output_dir, throughput), stopper, *callbacks],
        throughput=throughput,
        **parts.trainer_kwargs,
        optimizers=(optimizer, None),
    )
    _use_our_progress_bar(trainer, throughput)

    stopper.install()
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    finally:
        stopper.uninstall()
    if stopper.stopped_at is not None:
        checkpoint = str(output_dir / f"checkpoint-{stopper.stopped_at}")
        name = signal.Signals(stopper.received or signal.SIGTERM).name
        logger.warning(
            "stopped by %s; checkpoint saved in %s (run again to resume from it)", name, checkpoint
        )
        return TrainingOutcome(output_dir, interrupted_by=stopper.received, checkpoint=checkpoint)

    metrics = dict(result.metrics)
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
        chunked_loss=chunked,
        gradient_checkpointing=bool(args.gradient_checkpointing),
        **peak_memory(),
    )
    if estimate is not None:
        mfu = throughput.mfu(metrics["trained_tokens_per_second"] or 0.0)
        metrics.update(estimate.metrics(), mfu=round(mfu, 4) if mfu is not None else None)
    if config.finetuning.stage in PAIRWISE_STAGES:  # a pair is two trained sequences
        metrics.update(
            trained_pairs=samples // 2,
            trained_pairs_per_second=round(samples / 2 / runtime, 3) if runtime else None,
        )
    if parts.eval is not None and args.do_eval:
        metrics.update(trainer.evaluate(metric_key_prefix="eval"))
    parts.before_save()
    _save_outputs(trainer, config, output_dir, metrics, pissa_initial)
    return TrainingOutcome(output_dir, metrics=metrics)


def _sft_parts(
    config: Config,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    media: Any,
    train_set: Dataset,
    eval_set: Dataset | None,
) -> StageParts:
    """Stages sft and pt: the model's own (chunked) loss on padded or packed samples."""
    from lmforge.train.trainer import LmforgeTrainer

    collator = TrainingCollator(
        media=media,
        pad_token_id=tokenizer.pad_token_id,
        pad_to_multiple_of=8 if torch.cuda.is_available() and not packing_enabled(config) else None,
        flatten=packing_enabled(config)
        and getattr(model.config, "_attn_implementation", "") == "flash_attention_2",
    )
    return StageParts(model, train_set, eval_set, collator, LmforgeTrainer)


def preference_stage(stage: str) -> Any:
    """The recipe module of a preference stage (train/dpo.py, train/kto.py, train/rm.py)."""
    from lmforge.train import dpo, kto, rm

    return {"dpo": dpo, "kto": kto, "rm": rm}[stage]


def training_arguments(config: Config) -> Seq2SeqTrainingArguments:
    """transformers' arguments with lmforge's fixed choices on top."""
    if not config.training_kwargs.get("output_dir"):
        raise ConfigError(
            "config key 'output_dir' is required: the folder for checkpoints and the trained model"
        )
    if not torch.cuda.is_available() and "use_cpu" not in config.training_kwargs:
        # accelerate sets up torchrun's processes (gloo) on a CPU only when told it runs on the CPU
        config.training_kwargs["use_cpu"] = True
    args = config.training_arguments()
    args.remove_unused_columns = False  # our collator picks the columns it needs
    args.label_names = ["labels"]
    if config.finetuning.stage in PREFERENCE_STAGES:
        args.prediction_loss_only = True  # eval reports the loss and rewards/*, no logits
    if "ddp_find_unused_parameters" not in config.training_kwargs:
        args.ddp_find_unused_parameters = False
    if "train_sampling_strategy" not in config.training_kwargs:
        if config.finetuning.disable_shuffling:
            args.train_sampling_strategy = "sequential"
        elif config.finetuning.stage == "kto":
            args.train_sampling_strategy = "random"  # length groups would split desirable from undesirable
        elif not packing_enabled(config):
            args.train_sampling_strategy = "group_by_length"  # little padding without packing
    if "dataloader_pin_memory" not in config.training_kwargs and not torch.cuda.is_available():
        args.dataloader_pin_memory = False
    return args


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
    from lmforge.templates import resolve_template

    template = resolve_template(config.data.template, tokenizer)
    tokenizer.chat_template = template.jinja_chat_template()
    return template


def training_media(config: Config) -> Any:
    """The media processing of a multimodal model (Qwen2-VL, Qwen2.5-VL, Qwen2-Audio); None for text models."""
    from transformers import AutoConfig

    from lmforge.media.models import media_processing_for
    from lmforge.model.loader import model_path

    path = model_path(config.model)
    try:
        model_config = AutoConfig.from_pretrained(path, trust_remote_code=config.model.trust_remote_code)
    except (OSError, ValueError):
        return None  # the model load reports it, with the reason
    return media_processing_for(model_config, path, config.model)


def _load_data(
    config: Config, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate, media: Any = None
) -> PreparedData:
    from lmforge.data import load_sft_datasets

    bundle = load_sft_datasets(
        config, tokenizer, template, config.finetuning.stage, media=media, packing=packing_enabled(config)
    )
    return PreparedData(train=bundle.train, eval=bundle.eval, report=bundle.report)


def _tokenizing_only(config: Config) -> bool:
    """``tokenized_path`` names a folder with no encoded data yet: this run only encodes and saves it."""
    from lmforge.data.loader import is_saved_bundle

    path = config.data.tokenized_path
    return bool(path) and not config.data.streaming and not is_saved_bundle(Path(path))


def _arrange(
    config: Config, args: Seq2SeqTrainingArguments, data: PreparedData
) -> tuple[Dataset, Dataset | None]:
    """Pack, or add the length column the length-grouped sampler reads."""
    from datasets import IterableDataset

    if isinstance(data.train, IterableDataset):  # streaming: consumed in order, nothing to pack or group
        if args.train_sampling_strategy == "group_by_length":
            args.train_sampling_strategy = "random"
        return data.train, data.eval
    if data.train is None or len(data.train) == 0:
        raise ConfigError("no training samples: check dataset, max_samples and cutoff_len")
    sets = [data.train, data.eval]
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


def _load_model(
    config: Config, args: Seq2SeqTrainingArguments, checkpointing: bool
) -> tuple[torch.nn.Module, bool]:
    from lmforge.model.adapter import prepare_trainable
    from lmforge.model.loader import load_model
    from lmforge.model.loss import enable_chunked_loss

    model = load_model(
        config.model,
        config.finetuning,
        trainable=True,
        dtype=training_dtype(config, args),
        num_labels=1 if config.finetuning.stage == "rm" else None,  # the reward model's scalar head
    )
    model.config.use_cache = (
        False  # a cache in training turns off the packed-sequence masks, and wastes memory
    )
    # `checkpointing` is the estimate's answer to gradient_checkpointing (auto unless set)
    args.gradient_checkpointing = checkpointing and bool(
        getattr(model, "supports_gradient_checkpointing", False)
    )
    if args.gradient_checkpointing and not args.gradient_checkpointing_kwargs:
        args.gradient_checkpointing_kwargs = {"use_reentrant": config.model.use_reentrant_gc}
    model = prepare_trainable(
        model, config.model, config.finetuning, gradient_checkpointing=bool(args.gradient_checkpointing)
    )
    chunked = bool(
        config.finetuning.chunked_loss
        and _chunked_loss_allowed(args)
        and (config.finetuning.stage in ("dpo", "kto") or enable_chunked_loss(model))
    )  # dpo and kto compute chunked log-probabilities themselves (model/loss.py)
    logger.info("loss: %s cross-entropy", "chunked" if chunked else "plain")
    return model, chunked


def _chunked_loss_allowed(args: Seq2SeqTrainingArguments) -> bool:
    """Off where parameters are sharded (DeepSpeed ZeRO-3, FSDP) or eval needs logits."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled() or args.fsdp:
        logger.info("chunked cross-entropy off: parameters are sharded (ZeRO-3/FSDP)")
        return False
    return not args.predict_with_generate


def _use_our_progress_bar(trainer: Any, throughput: Throughput) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(ProgressBar(throughput))


def _save_outputs(
    trainer: Any, config: Config, output_dir: Path, metrics: dict[str, Any], pissa_initial: Path | None = None
) -> None:
    """Model (or adapter), tokenizer, state, results and plots, each written under a temporary name first."""
    staging = output_dir / FINAL_STAGING
    trainer.save_model(str(staging))  # every process joins (DeepSpeed/FSDP gather); the main one writes
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return
    if pissa_initial is not None:
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
