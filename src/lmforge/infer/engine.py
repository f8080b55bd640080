"""The interface every inference backend implements, and what the backends share.

The server and the terminal chat only talk to an :class:`Engine`: they hand it prompt token
ids (already built by the chat template) and sampling options, and read text deltas back.
That keeps the template path identical for every backend and lets the vllm engine stay an
optional import. The backends import this module; none imports another, and the choice
between them is :func:`lmforge.infer.backends.create_engine`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lmforge.media.inputs import MediaInputs, MediaProcessing

FinishReason = Literal["stop", "length"]


class EngineOverloaded(LmforgeError):
    """Every generation slot and queue place is taken; the caller should retry later (HTTP 429)."""


class EngineUnavailable(LmforgeError):
    """The engine is shutting down or failed (HTTP 503)."""


class EngineRejected(LmforgeError):
    """The engine refused the request's settings (HTTP 400); ``param`` names the field when known."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


GREEDY_BELOW_TEMPERATURE = 1e-5


@dataclass
class SamplingOptions:
    """What one request asks of the sampler. ``temperature`` 0 means greedy decoding."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    # OpenAI's penalties on tokens already generated (the prompt's do not count): a token's
    # logit drops by frequency_penalty per earlier use, and by presence_penalty once it was used.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    seed: int | None = None
    n: int = 1
    skip_special_tokens: bool = True

    @property
    def greedy(self) -> bool:
        # below this, dividing logits by the temperature overflows float32 (vLLM draws the same line)
        return self.temperature < GREEDY_BELOW_TEMPERATURE


@dataclass
class GenerationChunk:
    """New output of choice ``index``: text and tokens since the last chunk.

    ``finish_reason`` is set on the last chunk of a choice; ``num_tokens`` counts every token
    generated for it so far (the one that ended it included).
    """

    index: int
    text: str
    num_tokens: int
    finish_reason: FinishReason | None = None


class Engine(abc.ABC):
    """A loaded model that turns prompt ids into streamed text."""

    #: the tokenizer the chat template encodes with
    tokenizer: PreTrainedTokenizerBase
    #: the longest prompt + completion the engine accepts, in tokens
    context_length: int
    #: turns pictures or sounds into model inputs; None for an engine that takes text only
    media: MediaProcessing | None = None

    @property
    def vocab_size(self) -> int:
        """Token ids a prompt may hold: ``0 <= id < vocab_size``."""
        return len(self.tokenizer)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Called once the event loop runs (engines that need it start workers here)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop accepting work and free resources."""

    def claim_cpu_threads(self) -> None:  # noqa: B027 - optional hook
        """Called by the server and chat processes, which own their process-wide torch settings."""

    @abc.abstractmethod
    def generate(
        self, prompt_ids: list[int], options: SamplingOptions, media: MediaInputs | None = None
    ) -> AsyncGenerator[GenerationChunk, None]:
        """Stream chunks for ``options.n`` choices. Closing the iterator cancels the work.

        ``media`` (only for an engine with :attr:`media`) holds the processed pictures whose
        placeholders ``prompt_ids`` already repeats.

        Raises :class:`EngineOverloaded` (before the first chunk) when it cannot take the request.
        """

    def stats(self) -> dict[str, Any]:
        """Counters for ``/health`` (running and waiting requests, tokens generated)."""
        return {}

    @property
    def failure(self) -> str | None:
        """Why the engine can serve no more requests (it died), or None while it can.

        The server reports it on ``/health`` and exits, so that whatever supervises the
        process restarts it instead of routing requests to a server that fails them all.
        """
        return None


def default_stop_token_ids(tokenizer: PreTrainedTokenizerBase, model_config: object = None) -> list[int]:
    """The EOS ids of the tokenizer and of the model's generation config."""
    ids: list[int] = []
    for source in (getattr(model_config, "eos_token_id", None), tokenizer.eos_token_id):
        if source is None:
            continue
        for i in source if isinstance(source, list | tuple) else [source]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return ids


def model_context_length(model_config: object, override: int | None = None) -> int:
    """The longest sequence the model handles: ``model_max_length`` if set, else the config's.

    ``model_config`` is the model's transformers config (both backends read it the same way).
    """
    if override:
        return int(override)
    configs = [model_config, getattr(model_config, "text_config", None)]  # multimodal: the language model's
    for config in configs:
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
    return 2048
