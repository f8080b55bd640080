"""The transformers backend: continuously batched token-by-token decoding in one worker thread.

Requests wait in a bounded queue; the worker takes as many as fit in a batch
(``max_concurrent_requests`` rows), prefills them together (left-padded) and decodes them
step by step with a shared KV cache, each row with its own sampling settings, stop tokens,
stop strings and length limit. A row leaves the batch as soon as it finishes or its client
goes away, so a disconnected client stops costing compute at the next step. Requests that
arrive while others decode are prefilled and join the running batch at the next step
(for models with a plain key/value cache; others wait for the batch to end).

Vision-language models (Qwen2-VL) take pictures the same way: a request's pixel values go
into its prefill, its M-RoPE position ids come from the model's own ``get_rope_index``, and
the offset between a row's rotary position and its length (``_Row.delta``) carries into the
decoding steps, so image and text requests share batches.

Llama 3.2 Vision reads pictures through cross-attention layers whose cache holds each row's
pictures: its requests decode in fixed batches of requests with as many pictures each (a row
padded with pictures it lacks would read them), and every step passes each row's last
cross-attention mask row again (``_Row.step``), as ``generate`` grows that mask.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import threading
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

import torch
from transformers.cache_utils import Cache, DynamicLayer

from lmforge.config import hardware
from lmforge.config.environment import cpu_threads_pinned
from lmforge.infer.detokenize import IncrementalText
from lmforge.infer.engine import (
    Engine,
    EngineOverloaded,
    EngineRejected,
    EngineUnavailable,
    FinishReason,
    GenerationChunk,
    SamplingOptions,
    default_stop_token_ids,
    model_context_length,
)
from lmforge.infer.sampling import TokenSampler, choose_tokens
from lmforge.media.inputs import SECONDS_PER_GRID, MediaInputs, MediaProcessing
from lmforge.media.models import media_processing_for
from lmforge.media.omni import VIDEO_SECONDS
from lmforge.model.loader import load_model, load_tokenizer, model_path

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lmforge.config import Config

logger = logging.getLogger(__name__)

# seconds per video patch: rotary positions are built from them, so never rounded to half precision
TIME_KEYS = (SECONDS_PER_GRID, VIDEO_SECONDS)


class _End:
    """Put on a request's queue after its last chunk."""


_END = _End()
#: what the worker thread hands a request's stream: a chunk, the end, or the error that ended it
_Item = GenerationChunk | _End | BaseException


@dataclass
class _Request:
    prompt_ids: list[int]
    options: SamplingOptions
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_Item]
    media: MediaInputs | None = None
    cancelled: bool = False

    def emit(self, item: _Item) -> None:
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
    delta: int = 0  # rotary position minus sequence position (M-RoPE rows after a picture)
    step: dict[str, torch.Tensor] = field(default_factory=dict)  # media inputs every step repeats


class HuggingFaceEngine(Engine):
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        context_length: int,
        max_batch: int = 8,
        max_queued: int = 64,
        media: MediaProcessing | None = None,
    ) -> None:
        self.model = model
        self.media = media
        # a cross-attention model's cache holds each row's pictures: rows never join a running batch
        self._fixed_batches = media is not None and media.cross_attention
        # compute the prompt's last logits only, where the model's forward offers it
        accepts = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._last_logits_only: dict[str, int] = {"logits_to_keep": 1} if accepts else {}
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
        self.requests_joined = 0  # requests that started while others were decoding
        # Set by claim_cpu_threads (the api/chat processes; None: leave torch's count alone):
        # prompts are prefilled with every core (a burst of compute the event loop can wait for),
        # decoding steps take the threads `decoding_threads` gives for the rows and the machine's load.
        self.prefill_threads: int | None = None
        self.cores: int | None = None
        self._step_flops = 0.0  # FLOPs of one decoding step of one row (2 per weight)
        self._threads_checked = (-1, 0)  # (rows, step) of the last decision

    @classmethod
    def from_config(cls, config: Config) -> HuggingFaceEngine:
        tokenizer = load_tokenizer(config.model, padding_side="left")
        model = load_model(config.model, config.finetuning, trainable=False)
        media = media_processing_for(model.config, model_path(config.model), config.model)
        return cls(
            model,
            tokenizer,
            context_length=model_context_length(model.config, config.model.model_max_length),
            max_batch=config.serving.max_concurrent_requests,
            max_queued=config.serving.max_queued_requests,
            media=media,
        )

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_input_embeddings().get_parameter("weight").shape[0])

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
        """Let this engine choose torch's CPU threads (unless ``OMP_NUM_THREADS`` is set)."""
        if self.model.device.type == "cpu" and not cpu_threads_pinned():
            self.cores = hardware.usable_cores()
            self.prefill_threads = self.cores
            self._step_flops = 2 * sum(p.numel() for p in self.model.parameters())

    def _set_decoding_threads(self, rows: int) -> None:
        """Re-decide the decoding threads when the row count changes, or every 32 steps (the load)."""
        if self.cores is None:
            return
        last_rows, steps = self._threads_checked
        if rows == last_rows and steps < 32:
            self._threads_checked = (rows, steps + 1)
            return
        self._threads_checked = (rows, 0)
        threads = decoding_threads(self.cores, rows, _others_load(), self._step_flops * rows)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "running": self._in_flight - len(self._waiting),
                "waiting": len(self._waiting),
                "tokens_generated": self.tokens_generated,
                "requests_cancelled": self.requests_cancelled,
                "batches": self.batches,
                "requests_joined": self.requests_joined,
            }

    def generate(
        self, prompt_ids: list[int], options: SamplingOptions, media: MediaInputs | None = None
    ) -> AsyncGenerator[GenerationChunk, None]:
        if not prompt_ids:
            raise EngineRejected("the prompt holds no tokens", "prompt")
        media = media if media is not None and media.items else None
        if media is not None and self.media is None:
            raise ValueError("this model takes text only")
        loop = asyncio.get_running_loop()
        request = _Request(list(prompt_ids), options, loop, asyncio.Queue(), media=media)
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

    async def _stream(self, request: _Request) -> AsyncGenerator[GenerationChunk, None]:
        ended = False
        try:
            while True:
                item = await request.queue.get()
                if isinstance(item, _End):
                    ended = True
                    return
                if isinstance(item, BaseException):
                    ended = True
                    raise item
                yield item
        finally:
            # Counted here, under the lock and together with _in_flight, so that /health never
            # shows a request gone but not yet counted; the worker drops its rows at its next step.
            with self._cond:
                if not request.cancelled and request in self._waiting:
                    self._waiting.remove(request)
                self.requests_cancelled += not ended
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
                batch = self._take_waiting(self.max_batch, first_always=True)
            try:
                self._decode(batch)
            except Exception as exc:  # a bug or an out-of-memory: fail these requests, keep serving
                logger.exception("generation failed")
                for request in self._running:
                    request.emit(EngineUnavailable(f"generation failed: {type(exc).__name__}: {exc}"))
            finally:
                with self._cond:
                    self._running = []

    def _take_waiting(self, room: int, *, first_always: bool = False) -> list[_Request]:
        """Waiting requests, oldest first, whose choices fit in ``room`` rows (caller holds the lock).

        A request asking for more choices than a whole batch holds still runs, alone.
        """
        taken: list[_Request] = []
        rows = 0
        while self._waiting:
            n = self._waiting[0].options.n
            if rows + n > room and not (first_always and not taken):
                break
            if self._fixed_batches and taken and _pictures(taken[0]) != _pictures(self._waiting[0]):
                break
            taken.append(self._waiting.popleft())
            rows += n
        self._running.extend(taken)
        return taken

    def _make_rows(self, request: _Request) -> list[_Row]:
        options = request.options
        stop_ids = set(self.eos_ids) | set(options.stop_token_ids)
        room = self.context_length - len(request.prompt_ids)
        return [
            _Row(
                request=request,
                index=i,
                sampler=TokenSampler(options, seed_offset=i, prompt_length=len(request.prompt_ids)),
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
    def _decode(self, batch: list[_Request]) -> None:
        """Decode ``batch`` to the end, letting waiting requests join between steps.

        New requests are prefilled on their own and their KV cache joins the running one
        (both left-padded to one width), so a request that arrives while others decode
        starts at the next step instead of after the whole batch. Models whose cache is not
        a plain per-layer key/value cache (sliding windows, linear attention) decode in
        fixed batches instead.
        """
        self.batches += 1
        live: dict[int, list[_Row]] = {}
        requests: list[_Request] = []
        active: list[_Row] = []
        next_ids: list[int] = []
        cache: Cache | None = None
        attention: torch.Tensor | None = None
        pending = batch
        while True:
            if pending:
                requests.extend(pending)
                joined = self._prefill(pending, live)
                self._close_finished(requests, live)
                if joined is not None:
                    new_cache, new_attention, new_rows, new_ids = joined
                    keep = [i for i, row in enumerate(new_rows) if not row.finished]
                    if keep:
                        if len(keep) < len(new_rows):
                            new_cache, new_attention = _select_rows(new_cache, new_attention, keep)
                        new_rows = [new_rows[i] for i in keep]
                        new_ids = [new_ids[i] for i in keep]
                        if cache is None or attention is None:
                            cache, attention = new_cache, new_attention
                        else:
                            attention = _join_caches(cache, attention, new_cache, new_attention)
                        active += new_rows
                        next_ids += new_ids
                pending = []
            if not active or cache is None or attention is None:
                return
            self._set_decoding_threads(len(active))
            attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=1)
            positions = attention.sum(-1, keepdim=True) - 1
            if any(row.delta for row in active):
                positions = positions + torch.tensor([[row.delta] for row in active], device=positions.device)
            out = self.model(
                input_ids=torch.tensor(next_ids, device=attention.device).unsqueeze(1),
                attention_mask=attention,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                **_step_inputs(active),
            )
            next_ids = self._sample(active, out.logits[:, -1, :])
            self._close_finished(requests, live)
            keep = [i for i, row in enumerate(active) if not row.finished]
            if len(keep) < len(active):
                if keep:
                    cache, attention = _select_rows(cache, attention, keep)
                active = [active[i] for i in keep]
                next_ids = [next_ids[i] for i in keep]
                if not active:
                    cache = attention = None
            joinable = not self._fixed_batches and _joinable(cache)
            if active and attention is not None and cache is not None and joinable:
                attention = _trim_left_padding(cache, attention)
            if (active and not joinable) or len(active) >= self.max_batch:
                continue
            with self._cond:
                if self._waiting and not self._closing:
                    pending = self._take_waiting(self.max_batch - len(active), first_always=not active)
                    self.requests_joined += len(pending) if active else 0

    def _prefill(
        self, batch: list[_Request], live: dict[int, list[_Row]]
    ) -> tuple[Cache, torch.Tensor, list[_Row], list[int]] | None:
        """Run the prompts of ``batch`` together and choose each row's first token."""
        for request in batch:
            if request.cancelled:
                request.emit(_END)
            else:
                live[id(request)] = self._make_rows(request)
        rows = [row for request in batch for row in live.get(id(request), [])]
        if not rows:
            return None
        device = self.model.device
        width = max(len(row.ids) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row.ids) :] = torch.tensor(row.ids)
            attention[i, width - len(row.ids) :] = 1
        attention = attention.to(device)
        input_ids = input_ids.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        media = self._media_inputs(rows, input_ids, device)
        if media and self.media is not None:
            step = self.media.step_inputs(media)
            for i, row in enumerate(rows):
                row.step = {key: value[i : i + 1] for key, value in step.items()}
        seconds = media.pop(SECONDS_PER_GRID, None)
        if media and self.media is not None and self.media.mrope:
            positions = self._media_positions(rows, input_ids, attention, media, seconds)
        with _cpu_threads(self.prefill_threads):
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention,
                position_ids=positions,
                use_cache=True,
                **self._last_logits_only,
                **media,
            )
        first = self._sample(rows, out.logits[:, -1, :])
        return out.past_key_values, attention, rows, first

    def _media_inputs(
        self, rows: list[_Row], input_ids: torch.Tensor, device: torch.device
    ) -> dict[str, torch.Tensor]:
        """The rows' pictures as one set of model inputs, in row order (a choice repeats its request's)."""
        parts = [row.request.media for row in rows]
        if self.media is None or all(part is None for part in parts):
            return {}
        dtype = self.model.dtype
        out = {}
        for key, joined in self.media.batch_inputs(parts, input_ids.cpu()).items():
            joined = joined.to(device)
            out[key] = joined.to(dtype) if joined.is_floating_point() and key not in TIME_KEYS else joined
        return out

    def _media_positions(
        self,
        rows: list[_Row],
        input_ids: torch.Tensor,
        attention: torch.Tensor,
        media: dict[str, torch.Tensor],
        seconds_per_grid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """M-RoPE position ids (3, rows, width) from the model; each row keeps its offset for decoding."""
        assert self.media is not None
        own = getattr(self.media, "rope_positions", None)  # a model whose rope index differs (Qwen2.5-Omni)
        if own is not None:
            positions, deltas = own(self.model, input_ids, attention, media)
            for row, delta in zip(rows, deltas.view(-1).tolist(), strict=True):
                row.delta = int(delta)
            return positions
        positions, deltas = self.model.model.get_rope_index(
            input_ids,
            mm_token_type_ids=self.media.token_types(input_ids),
            image_grid_thw=media.get("image_grid_thw"),
            video_grid_thw=media.get("video_grid_thw"),
            attention_mask=attention,
            **({"second_per_grid_ts": seconds_per_grid} if seconds_per_grid is not None else {}),
        )
        for row, delta in zip(rows, deltas.view(-1).tolist(), strict=True):
            row.delta = int(delta)
        return positions

    def _sample(self, rows: list[_Row], logits: torch.Tensor) -> list[int]:
        """Each row's next token from its own sampler; rows whose client left are finished."""
        chosen = choose_tokens([row.sampler for row in rows], logits, lambda i: torch.tensor([rows[i].ids]))
        for row, token in zip(rows, chosen, strict=True):
            self._advance(row, token)
            if row.request.cancelled and not row.finished:
                row.finished = True
        self.tokens_generated += len(rows)
        return chosen

    def _advance(self, row: _Row, token: int) -> None:
        row.generated += 1
        row.ids.append(token)
        finish: FinishReason | None = None
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


# below this many FLOPs a decoding step is too short for a second thread to pay for its wake-up
MIN_FLOPS_PER_THREAD = 20e6


def decoding_threads(cores: int, rows: int, others_load: float, step_flops: float) -> int:
    """CPU threads for one decoding step, by machine and load.

    A request alone may use every core: the event loop only streams its tokens. Several rows
    stream several responses, so one core stays with the server. Cores other processes keep
    busy (the load average beyond our own threads) are left to them: a thread that waits for a
    descheduled sibling at every step is slower than no thread. A step too small to split
    (a tiny model, few rows) runs on one thread.
    """
    wanted = cores if rows <= 1 else cores - 1
    free = cores - int(others_load + 0.5)
    by_size = int(step_flops // MIN_FLOPS_PER_THREAD)
    return max(1, min(wanted, free, by_size))


def _others_load() -> float:
    """The 1-minute load average beyond this process's own torch threads."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return 0.0
    return max(0.0, load - torch.get_num_threads())


@contextlib.contextmanager
def _cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` for a block (``None``: unchanged)."""
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _pictures(request: _Request) -> int:
    return len(request.media.items) if request.media is not None else 0


def _step_inputs(rows: list[_Row]) -> dict[str, torch.Tensor]:
    """The media inputs each decoding step repeats, joined over the rows (which all carry them)."""
    if not rows or not rows[0].step:
        return {}
    return {key: torch.cat([row.step[key] for row in rows]) for key in rows[0].step}


def _joinable(cache: Cache | None) -> TypeGuard[Cache]:
    """True for a cache of plain growing key/value tensors, which rows can join and leave."""
    layers = getattr(cache, "layers", None) or []  # a model's own cache class may have none
    return bool(layers) and all(
        type(layer) is DynamicLayer
        and layer.is_initialized
        and layer.keys is not None
        and layer.keys.dim() == 4
        for layer in layers
    )


def _select_rows(cache: Cache, attention: torch.Tensor, keep: list[int]) -> tuple[Cache, torch.Tensor]:
    index = torch.tensor(keep, device=attention.device)
    cache.batch_select_indices(index)
    return cache, attention.index_select(0, index)


def _join_caches(
    cache: Cache, attention: torch.Tensor, other: Cache, other_attention: torch.Tensor
) -> torch.Tensor:
    """Append ``other``'s rows to ``cache`` (in place), left-padding the shorter to one width.

    Padding positions hold zeros and are masked out by the returned attention mask.
    """
    width = max(attention.shape[1], other_attention.shape[1])

    def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
        missing = width - t.shape[dim]
        if not missing:
            return t
        shape = list(t.shape)
        shape[dim] = missing
        return torch.cat([t.new_zeros(shape), t], dim=dim)

    for layer, other_layer in zip(_kv_layers(cache), _kv_layers(other), strict=True):
        (keys, values), (other_keys, other_values) = _kv(layer), _kv(other_layer)
        layer.keys = torch.cat([pad(keys, 2), pad(other_keys, 2)], dim=0)
        layer.values = torch.cat([pad(values, 2), pad(other_values, 2)], dim=0)
    return torch.cat([pad(attention, 1), pad(other_attention, 1)], dim=0)


def _trim_left_padding(cache: Cache, attention: torch.Tensor) -> torch.Tensor:
    """Drop leading positions that are padding in every row (left after long rows finish)."""
    lead = int((attention.cumsum(-1) == 0).sum(-1).min())
    if lead == 0:
        return attention
    for layer in _kv_layers(cache):
        keys, values = _kv(layer)
        layer.keys = keys[:, :, lead:, :]
        layer.values = values[:, :, lead:, :]
    return attention[:, lead:]


def _kv_layers(cache: Cache) -> list[DynamicLayer]:
    """The layers of a cache that :func:`_joinable` accepted (each a plain DynamicLayer)."""
    return [layer for layer in cache.layers if isinstance(layer, DynamicLayer)]


def _kv(layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """A joinable layer's key and value tensors, which :func:`_joinable` saw initialized."""
    assert layer.keys is not None and layer.values is not None
    return layer.keys, layer.values
