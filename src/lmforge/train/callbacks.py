"""What a training run shows and records while it runs, and how it stops on a signal.

- ``Throughput`` (train/trainer.py) counts trained tokens and samples; these callbacks show and log it.
- ``ProgressBar`` replaces transformers' bar: loss, learning rate, tokens/s, MFU and the ETA.
- ``JsonlLog`` appends every log record to ``trainer_log.jsonl`` (the file tools plot from).
- ``SignalStop`` turns SIGINT/SIGTERM into "save a checkpoint after this step, then stop".
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from lmforge.train.trainer import Throughput

if TYPE_CHECKING:
    from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

LOG_FILE = "trainer_log.jsonl"


class ProgressBar(TrainerCallback):
    """A tqdm bar on the main process with loss, learning rate and trained tokens per second."""

    def __init__(self, throughput: Throughput) -> None:
        self.throughput = throughput
        self.bar: tqdm[Any] | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.is_world_process_zero and not args.disable_tqdm:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=state.max_steps, initial=state.global_step, desc="train", dynamic_ncols=True
            )
        self.throughput.started = time.perf_counter()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if self.bar is None or not logs:
            return
        postfix = {}
        if "loss" in logs:
            postfix["loss"] = f"{logs['loss']:.4f}"
        if "learning_rate" in logs:
            postfix["lr"] = f"{logs['learning_rate']:.2e}"
        postfix["tok/s"] = f"{self.throughput.tokens_per_second():.0f}"
        mfu = self.throughput.mfu()
        if mfu is not None:
            postfix["MFU"] = f"{100 * mfu:.1f}%"
        self.bar.set_postfix(postfix, refresh=True)
        if "eval_loss" in logs:
            self.bar.write(f"step {state.global_step}: eval_loss {logs['eval_loss']:.4f}")

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class JsonlLog(TrainerCallback):
    """Append each log record, with progress and throughput, to ``output_dir/trainer_log.jsonl``."""

    def __init__(self, output_dir: str, throughput: Throughput) -> None:
        self.path = Path(output_dir) / LOG_FILE
        self.throughput = throughput
        self.started = time.perf_counter()

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.started = time.perf_counter()
        self.first_step = state.global_step

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        elapsed = time.perf_counter() - self.started
        done = max(state.global_step - getattr(self, "first_step", 0), 0)
        left = max(state.max_steps - state.global_step, 0)
        record: dict[str, object] = {
            "current_steps": state.global_step,
            "total_steps": state.max_steps,
            "epoch": round(state.epoch or 0.0, 4),
            "percentage": round(100 * state.global_step / max(state.max_steps, 1), 2),
            "elapsed_time": round(elapsed, 2),
            "remaining_time": round(elapsed / done * left, 2) if done else None,
            "trained_tokens": self.throughput.tokens * self.throughput.world_size,
            "tokens_per_second": round(self.throughput.tokens_per_second(), 2),
        }
        mfu = self.throughput.mfu()
        if mfu is not None:
            record["mfu"] = round(mfu, 4)
        record.update({k: _plain(v) for k, v in logs.items()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _plain(value: object) -> object:
    """A JSON-writable log value: tensors as numbers, inf and nan as strings."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class SignalStop(TrainerCallback):
    """On SIGINT/SIGTERM: finish the current step, save a checkpoint, stop. A second signal quits at once.

    Under torchrun every process must stop at the same step, so the flag is agreed with an
    all-reduce at each step end (only when a process group exists).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self.stopped_at: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            # a Ray Train worker trains in a thread of its actor; Ray itself stops its workers
            logger.debug("training outside the main thread: no SIGINT/SIGTERM checkpoint")
            return
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            self.uninstall()
            raise KeyboardInterrupt
        self.received = signum
        logger.warning(
            "%s received: saving a checkpoint after this step, then stopping", signal.Signals(signum).name
        )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self._agreed_stop(args):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
            if self.received is None:
                self.received = signal.SIGTERM

    def _agreed_stop(self, args: TrainingArguments) -> bool:
        flag = self.received is not None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            device = args.device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
            tensor = torch.tensor([1 if flag else 0], device=device)
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
            flag = bool(tensor.item())
        return flag
