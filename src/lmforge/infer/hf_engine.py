"""The transformers backend: batched token-by-token decoding in one worker thread.

Requests wait in a bounded queue; the worker takes as many as fit in a batch
(``max_concurrent_requests`` rows), prefills them together (left-padded) and decodes them
step by step with a shared KV cache, each row with its own sampling settings, stop tokens,
stop strings and length limit. A row leaves the batch as soon as it finishes or its client
goes away, so a disconnected client stops costing compute at the next step. Requests that
arrive during a batch start with the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from lmforge.infer.detokenize import IncrementalText
from lmforge.infer.engine import (
    Engine,
    EngineOverloaded,
    EngineUnavailable,
    GenerationChunk,
    SamplingOptions,
    default_stop_token_ids,
)
from lmforge.infer.sampling import TokenSampler

if TYPE_CHECKING:
    from lmforge.config import Config

logger = logging.getLogger(__name__)
_END = object()


@dataclass
class _Request:
    prompt_ids: list[int]
    options: SamplingOptions
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Any]
    cancelled: bool = False

    def emit(self, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening any more
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


@dataclass
class _Row:
    """One choice of one request while it decodes."""

    request: _Request
    index: int
    sampler: TokenSampler
    text: IncrementalText
    stop_ids: set[int]
    max_new: int
    ids: list[int] = field(default_factory=list)
    generated: int = 0
    finished: bool = False


class HuggingFaceEngine(Engine):
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        context_length: int,
        max_batch: int = 8,
        max_queued: int = 64,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.max_batch = max(1, max_batch)
        self.max_queued = max(0, max_queued)
        self.eos_ids = default_stop_token_ids(tokenizer, getattr(model, "generation_config", None))
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos_ids or [0])[0]
        )
        self._waiting: deque[_Request] = deque()
        self._running: list[_Request] = []
        self._in_flight = 0  # admitted requests whose stream has not ended yet
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.tokens_generated = 0
        self.requests_cancelled = 0
        self.batches = 0

    @classmethod
    def from_config(cls, config: Config) -> HuggingFaceEngine:
        from lmforge.model.loader import load_model, load_tokenizer

        tokenizer = load_tokenizer(config.model, padding_side="left")
        model = load_model(config.model, config.finetuning, trainable=False)
        return cls(
            model,
            tokenizer,
            context_length=model_context_length(model.config, config.model.model_max_length),
            max_batch=config.serving.max_concurrent_requests,
            max_queued=config.serving.max_queued_requests,
        )

    async def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="lmforge-hf-engine", daemon=True)
            self._thread.start()

    async def close(self) -> None:
        with self._cond:
            self._closing = True
            for request in self._waiting:
                request.emit(EngineUnavailable("the server is shutting down"))
            self._waiting.clear()
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)

    def claim_cpu_threads(self) -> None:
        if self.model.device.type == "cpu":
            leave_a_core_for_the_server()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "running": self._in_flight - len(self._waiting),
                "waiting": len(self._waiting),
                "tokens_generated": self.tokens_generated,
                "requests_cancelled": self.requests_cancelled,
                "batches": self.batches,
            }

    def generate(self, prompt_ids: list[int], options: SamplingOptions) -> AsyncIterator[GenerationChunk]:
        loop = asyncio.get_running_loop()
        request = _Request(list(prompt_ids), options, loop, asyncio.Queue())
        with self._cond:
            if self._closing:
                raise EngineUnavailable("the server is shutting down")
            if self._in_flight >= self.max_batch + self.max_queued:
                running = self._in_flight - len(self._waiting)
                raise EngineOverloaded(
                    f"the server is busy ({running} requests generating, {len(self._waiting)} waiting); retry later"
                )
            self._in_flight += 1
            self._waiting.append(request)
            self._cond.notify()
        return self._stream(request)

    async def _stream(self, request: _Request) -> AsyncIterator[GenerationChunk]:
        try:
            while True:
                item = await request.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            with self._cond:
                if not request.cancelled and request in self._waiting:
                    self._waiting.remove(request)
                request.cancelled = True
                self._in_flight -= 1

    # --- worker thread -------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                batch: list[_Request] = []
                rows = 0
                while self._waiting and (not batch or rows + self._waiting[0].options.n <= self.max_batch):
                    request = self._waiting.popleft()
                    batch.append(request)
                    rows += request.options.n
                self._running = batch
            try:
                self._run_batch(batch)
            except Exception as exc:  # a bug or an out-of-memory: fail these requests, keep serving
                logger.exception("generation failed")
                for request in batch:
                    request.emit(EngineUnavailable(f"generation failed: {type(exc).__name__}: {exc}"))
            finally:
                with self._cond:
                    self._running = []

    def _make_rows(self, request: _Request) -> list[_Row]:
        options = request.options
        stop_ids = set(self.eos_ids) | set(options.stop_token_ids)
        room = self.context_length - len(request.prompt_ids)
        return [
            _Row(
                request=request,
                index=i,
                sampler=TokenSampler(options, seed_offset=i),
                text=IncrementalText(
                    self.tokenizer, options.stop, skip_special_tokens=options.skip_special_tokens
                ),
                stop_ids=stop_ids,
                max_new=max(1, min(options.max_new_tokens, room)),
                ids=list(request.prompt_ids),
            )
            for i in range(options.n)
        ]

    @torch.inference_mode()
    def _run_batch(self, batch: list[_Request]) -> None:
        self.batches += 1
        live = {id(request): self._make_rows(request) for request in batch if not request.cancelled}
        rows = [row for request_rows in live.values() for row in request_rows]
        for request in batch:
            if request.cancelled:
                request.emit(_END)
        if not rows:
            return
        device = self.model.device
        width = max(len(row.ids) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row.ids) :] = torch.tensor(row.ids)
            attention[i, width - len(row.ids) :] = 1
        attention = attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids.to(device),
            attention_mask=attention,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out.past_key_values
        active = rows
        while True:
            logits = out.logits[:, -1, :]
            next_ids = []
            for i, row in enumerate(active):
                token = row.sampler.choose(logits[i], torch.tensor([row.ids]))
                self._advance(row, token)
                next_ids.append(token)
            self.tokens_generated += len(active)
            for row in active:
                if row.request.cancelled and not row.finished:
                    row.finished = True
                    self.requests_cancelled += row.index == 0
            self._close_finished(batch, live)
            keep = [i for i, row in enumerate(active) if not row.finished]
            if not keep:
                return
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                attention = attention.index_select(0, index)
                active = [active[i] for i in keep]
                next_ids = [next_ids[i] for i in keep]
            attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=1)
            positions = attention.sum(-1, keepdim=True) - 1
            out = self.model(
                input_ids=torch.tensor(next_ids, device=device).unsqueeze(1),
                attention_mask=attention,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )

    def _advance(self, row: _Row, token: int) -> None:
        row.generated += 1
        row.ids.append(token)
        finish = None
        if token in row.stop_ids:
            delta, finish = row.text.flush(), "stop"
        else:
            delta, stopped = row.text.push(token)
            if stopped:
                finish = "stop"
            elif row.generated >= row.max_new:
                delta, finish = delta + row.text.flush(), "length"
        if finish:
            row.finished = True
        if delta or finish:
            row.request.emit(GenerationChunk(row.index, delta, row.generated, finish))

    @staticmethod
    def _close_finished(batch: list[_Request], live: dict[int, list[_Row]]) -> None:
        """End the stream of each request whose choices have all finished (or whose client left)."""
        for request in batch:
            rows = live.get(id(request))
            if rows is not None and all(row.finished for row in rows):
                request.emit(_END)
                del live[id(request)]


def leave_a_core_for_the_server() -> None:
    """Decode with one CPU thread fewer than the machine has, unless ``OMP_NUM_THREADS`` says otherwise.

    Called by the ``lmforge api`` / ``lmforge chat`` processes (torch's thread count is
    process-wide, so library users keep theirs).

    The event loop (HTTP, tokenizing, detokenizing) needs a core too; when torch spins on
    every core, each small decoding step waits for it. On 2 shared cores, 1 thread decoded
    3-8x faster than 2 (bench/serve.py; vLLM's CPU backend makes the same choice).
    """
    from lmforge.config.environment import cpu_threads_pinned

    if cpu_threads_pinned():
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores - 1)
    if torch.get_num_threads() > threads:
        torch.set_num_threads(threads)
        logger.info(
            "decoding with %d CPU threads (one core left for the server; OMP_NUM_THREADS overrides)", threads
        )


def model_context_length(model_config: Any, override: int | None = None) -> int:
    """The longest sequence the model handles: ``model_max_length`` if set, else the config's."""
    if override:
        return int(override)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(model_config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048
