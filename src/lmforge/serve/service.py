"""What the routes do: template the request, run the engine, shape OpenAI responses and chunks.

Generated text goes through the template's ``parse_response``, so tool calls and thinking
come back as ``tool_calls`` and ``reasoning_content``. While streaming, visible text is sent
as soon as the parse of the text so far extends what was already sent; when tools are
offered the reply is held until it ends, because only the whole text tells a tool call from
an answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from lmforge.config.generating import GeneratingArguments
from lmforge.conversation import Conversation
from lmforge.infer.engine import Engine, GenerationChunk, SamplingOptions
from lmforge.infer.prompting import PromptBuilder
from lmforge.media.inputs import MediaInputError, MediaInputs
from lmforge.serve.convert import (
    MediaRef,
    forced_tool_call,
    media_refs,
    sampling_options,
    to_conversation,
)
from lmforge.serve.media_fetch import (
    MediaError,
    MediaPolicy,
    allowed_local_path,
    decode_base64,
    decode_data_url,
    load_media,
)
from lmforge.serve.openai_errors import ApiError, bad_request, engine_error
from lmforge.serve.protocol import ChatCompletionRequest, CompletionRequest, new_id, now
from lmforge.templates.slots import THINK_CLOSE, THINK_OPEN

logger = logging.getLogger(__name__)


def _without_partial_tag(text: str, tag: str) -> str:
    """``text`` less a trailing start of ``tag`` (``"...</thi"``), which may yet become the tag."""
    if tag in text:
        return text
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return text[:-n]
    return text


@dataclass
class PreparedChat:
    """A checked chat request: prompt ids, sampling options, media, and how to read the reply.

    ``hold``: tools are offered, so the reply is held until it ends (only the whole text tells
    a call from an answer). ``opening``: text the reply was begun with for the model (a forced
    tool call's start), already at the end of ``prompt_ids`` and part of the parsed reply.
    """

    prompt_ids: list[int]
    options: SamplingOptions
    hold: bool
    media: MediaInputs | None
    opening: str = ""


@dataclass
class ChoiceText:
    """One choice's generated text, what of it was already streamed, and how it ended."""

    parse: Any
    hold: bool
    raw: str = ""
    sent_content: str = ""
    sent_reasoning: str = ""
    tokens: int = 0
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    final_content: str = ""
    final_reasoning: str = ""

    def _parsed(self, text: str | None = None) -> tuple[str, str, list[Any]]:
        try:
            parsed = self.parse(self.raw if text is None else text)
        except Exception:  # a parser bug must not lose the answer: fall back to the raw text
            logger.exception("parse_response failed; sending the raw text")
            return self.raw, "", []
        return parsed.content or "", parsed.reasoning or "", list(parsed.tool_calls or [])

    def feed(self, chunk: GenerationChunk) -> dict[str, Any] | None:
        """Add new text; return the delta that can be sent now (None when nothing can)."""
        self.raw += chunk.text
        self.tokens = chunk.num_tokens
        if self.hold:
            return None
        start = self.raw.lstrip()
        if start and THINK_OPEN.startswith(start):  # maybe the opening of a thinking block: wait
            return None
        content, reasoning, _ = self._parsed(_without_partial_tag(self.raw, THINK_CLOSE))
        return self._delta(content, reasoning)

    def _delta(self, content: str, reasoning: str) -> dict[str, Any] | None:
        delta: dict[str, Any] = {}
        if reasoning.startswith(self.sent_reasoning) and len(reasoning) > len(self.sent_reasoning):
            delta["reasoning_content"] = reasoning[len(self.sent_reasoning) :]
            self.sent_reasoning = reasoning
        if content.startswith(self.sent_content) and len(content) > len(self.sent_content):
            delta["content"] = content[len(self.sent_content) :]
            self.sent_content = content
        return delta or None

    def finish(self, engine_reason: str) -> dict[str, Any] | None:
        """The final delta: what is left of the text, and the tool calls, if the reply made any."""
        content, reasoning, calls = self._parsed()
        self.finish_reason = engine_reason
        if calls:
            self.tool_calls = [
                {
                    "id": call.id or f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": json.dumps(call.arguments, ensure_ascii=False),
                    },
                }
                for call in calls
            ]
            self.finish_reason = "tool_calls"
        delta = self._delta(content, reasoning) or {}
        self.final_content, self.final_reasoning = content, reasoning
        if self.tool_calls:
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(self.tool_calls)]
        return delta or None


class ChatService:
    """The served model: its engine, chat template, name and generation defaults."""

    def __init__(
        self,
        engine: Engine,
        prompts: PromptBuilder,
        *,
        model_name: str,
        defaults: GeneratingArguments,
        media: MediaPolicy,
    ) -> None:
        self.engine = engine
        self.prompts = prompts
        self.model_name = model_name
        self.defaults = defaults
        self.media = media
        self.created = now()

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise ApiError(
                404,
                f"the model {name!r} does not exist on this server; it serves {self.model_name!r}",
                param="model",
                code="model_not_found",
            )

    # --- chat ------------------------------------------------------------------------------

    async def prepare_chat(self, request: ChatCompletionRequest) -> PreparedChat:
        self.check_model(request.model)
        conv = to_conversation(request)
        media = await self.load_media(request)
        thinking = request.enable_thinking
        try:
            prompt_ids = self.prompts.encode(conv, enable_thinking=thinking)
        except (ValueError, KeyError) as exc:
            raise bad_request(
                f"the chat template cannot render these messages: {exc}", param="messages"
            ) from None
        opening = self._tool_call_opening(request, conv, thinking)
        if opening:
            prompt_ids += self.prompts.opening_ids(opening, forced_tool_call(request)[1])
        if media is not None and self.engine.media is not None:
            try:
                prompt_ids = self.engine.media.expand(prompt_ids, media)
            except MediaInputError as exc:
                raise bad_request(str(exc), param="messages", code="invalid_media") from None
        max_tokens = request.max_completion_tokens or request.max_tokens
        options = sampling_options(
            request,
            self.defaults,
            prompt_tokens=len(prompt_ids),
            context_length=self.engine.context_length,
            max_tokens=max_tokens,
            stop_strings=self.prompts.stop_strings(),
            stop_token_ids=self.prompts.stop_token_ids(),
        )
        return PreparedChat(prompt_ids, options, bool(conv.tools), media, opening)

    def _tool_call_opening(
        self, request: ChatCompletionRequest, conv: Conversation, thinking: bool | None
    ) -> str:
        """The reply's forced start for ``tool_choice`` "required" or a named function ("" otherwise)."""
        forced, function = forced_tool_call(request)
        if not forced:
            return ""
        opening = self.prompts.tool_call_opening(conv, function, enable_thinking=thinking)
        if opening is None:
            raise bad_request(
                f"tool_choice {request.tool_choice if isinstance(request.tool_choice, str) else function!r} "
                f"needs a chat template that writes tool calls, and template {self.prompts.template.name!r} "
                "writes none; serve the model with a template that has a tool format (`lmforge template list`)",
                param="tool_choice",
            )
        return opening

    async def load_media(self, request: ChatCompletionRequest) -> MediaInputs | None:
        """The request's pictures as model inputs (None without media), after every check.

        Unsafe references are refused first, with no I/O: a forbidden path or address is
        refused before anything is opened or fetched. Then media the model cannot take are
        refused, and only then is anything read, fetched and decoded (off the event loop).
        """
        refs = media_refs(request)
        if not refs:
            return None
        self.check_media(refs)
        processing = self.engine.media
        unsupported = [ref for ref in refs if processing is None or ref.kind not in processing.kinds]
        if processing is None or unsupported:
            takes = "text only" if processing is None else "text, " + ", ".join(sorted(processing.kinds))
            kinds = sorted({ref.kind for ref in unsupported})
            raise bad_request(
                f"{unsupported[0].param}: the served model takes {takes}; {', '.join(kinds)} input is not supported",
                param=unsupported[0].param,
                code="unsupported_media",
            )
        blobs = []
        for ref in refs:
            try:
                blobs.append(await self._read(ref))
            except MediaError as exc:
                raise bad_request(f"{ref.param}: {exc}", param=ref.param, code="invalid_media") from None
        try:
            return await asyncio.to_thread(
                processing.process, blobs, [ref.param for ref in refs], [ref.kind for ref in refs]
            )
        except MediaInputError as exc:
            param = next((ref.param for ref in refs if str(exc).startswith(ref.param)), "messages")
            raise bad_request(str(exc), param=param, code="invalid_media") from None

    async def _read(self, ref: MediaRef) -> bytes:
        if ref.data is not None:
            return decode_base64(ref.data, self.media.max_bytes)
        return await load_media(ref.url or "", self.media)

    def check_media(self, refs: list[MediaRef]) -> None:
        """Refuse unsafe references (forbidden paths, disabled remote URLs) without any I/O."""
        for ref in refs:
            try:
                if ref.data is not None:
                    decode_base64(ref.data, self.media.max_bytes)
                    continue
                url = (ref.url or "").strip()
                lower = url.lower()
                if lower.startswith("data:"):
                    decode_data_url(url, self.media.max_bytes)
                elif lower.startswith(("http://", "https://")):
                    if not self.media.allow_remote:
                        raise MediaError(
                            "remote media URLs are disabled on this server (allow_remote_media: false)"
                        )
                elif lower.startswith("file://") or "://" not in url:
                    path = unquote(urlsplit(url).path) if lower.startswith("file://") else url
                    allowed_local_path(path, self.media.media_dir)
                else:
                    raise MediaError(f"unsupported media URL {url[:40]!r}")
            except MediaError as exc:
                raise bad_request(f"{ref.param}: {exc}", param=ref.param, code="invalid_media") from None

    def _choices(self, chat: PreparedChat, *, hold: bool) -> list[ChoiceText]:
        return [ChoiceText(self.prompts.parse, hold, raw=chat.opening) for _ in range(chat.options.n)]

    async def chat(self, request: ChatCompletionRequest) -> dict[str, Any]:
        prepared = await self.prepare_chat(request)
        prompt_ids = prepared.prompt_ids
        choices = self._choices(prepared, hold=True)
        async for chunk in self._generate(prompt_ids, prepared.options, prepared.media):
            choice = choices[chunk.index]
            choice.feed(chunk)
            if chunk.finish_reason:
                choice.finish(chunk.finish_reason)
        out = []
        for i, choice in enumerate(choices):
            message: dict[str, Any] = {"role": "assistant", "content": choice.final_content}
            if choice.final_reasoning:
                message["reasoning_content"] = choice.final_reasoning
            if choice.tool_calls:
                message["tool_calls"] = choice.tool_calls
                message["content"] = choice.final_content or None
            out.append(
                {"index": i, "message": message, "finish_reason": choice.finish_reason, "logprobs": None}
            )
        return {
            "id": new_id("chatcmpl"),
            "object": "chat.completion",
            "created": now(),
            "model": self.model_name,
            "choices": out,
            "usage": _usage(len(prompt_ids), sum(c.tokens for c in choices)),
        }

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[dict[str, Any]]:
        """Checks run now (errors become HTTP statuses); the returned iterator yields chunk bodies."""
        prepared = await self.prepare_chat(request)
        chunks = self._generate(prepared.prompt_ids, prepared.options, prepared.media)
        first = await _first_or_error(chunks)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return self._chat_chunks(prepared, first, chunks, include_usage)

    async def _chat_chunks(
        self,
        prepared: PreparedChat,
        first: GenerationChunk | None,
        chunks: AsyncGenerator[GenerationChunk, None],
        include_usage: bool,
    ) -> AsyncIterator[dict[str, Any]]:
        base = {
            "id": new_id("chatcmpl"),
            "object": "chat.completion.chunk",
            "created": now(),
            "model": self.model_name,
        }

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            body = {
                **base,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
            if include_usage:
                body["usage"] = None
            return body

        choices = self._choices(prepared, hold=prepared.hold)
        for i in range(prepared.options.n):
            yield chunk(i, {"role": "assistant", "content": ""})
        try:
            async for piece in _prepend(first, chunks):
                choice = choices[piece.index]
                delta = choice.feed(piece)
                if piece.finish_reason:
                    final = choice.finish(piece.finish_reason)
                    merged = {**(delta or {}), **(final or {})}
                    if delta and final and "content" in delta and "content" in final:
                        merged["content"] = delta["content"] + final["content"]
                    yield chunk(piece.index, merged, choice.finish_reason)
                elif delta:
                    yield chunk(piece.index, delta)
        finally:
            await chunks.aclose()
        if include_usage:
            usage = _usage(len(prepared.prompt_ids), sum(c.tokens for c in choices))
            yield {**base, "choices": [], "usage": usage}

    # --- raw completions -------------------------------------------------------------------

    def _prepare_completion(self, request: CompletionRequest) -> list[tuple[list[int], SamplingOptions]]:
        self.check_model(request.model)
        prompts_ids = self._completion_prompts(request.prompt)
        if request.stream and len(prompts_ids) > 1:
            raise bad_request("streaming takes one prompt per request", param="prompt")
        return [
            (
                ids,
                sampling_options(
                    request,
                    self.defaults,
                    prompt_tokens=len(ids),
                    context_length=self.engine.context_length,
                    max_tokens=request.max_tokens,
                    stop_strings=[],
                    stop_token_ids=[],
                ),
            )
            for ids in prompts_ids
        ]

    def _completion_prompts(self, prompt: str | list[str] | list[int] | list[list[int]]) -> list[list[int]]:
        """Token ids of each prompt: text is tokenized; token ids must be ones the model has."""
        items: list[Any] = [prompt] if isinstance(prompt, str) else list(prompt)
        if items and all(isinstance(i, int) for i in items):
            items = [items]
        if not items or any(len(i) == 0 for i in items):
            raise bad_request("'prompt' must not be empty", param="prompt")
        vocab = self.engine.vocab_size
        prompts_ids: list[list[int]] = []
        for item in items:
            if isinstance(item, str):
                ids = list(self.engine.tokenizer(item)["input_ids"])
                if not ids:  # text the tokenizer drops entirely, such as a lone control character
                    raise bad_request(f"'prompt' {item!r} encodes to no tokens", param="prompt")
                prompts_ids.append(ids)
                continue
            bad = next((i for i in item if not 0 <= i < vocab), None)
            if bad is not None:
                raise bad_request(
                    f"'prompt' holds token id {bad}, outside the model's vocabulary (0..{vocab - 1})",
                    param="prompt",
                )
            prompts_ids.append(list(item))
        return prompts_ids

    async def completion(self, request: CompletionRequest) -> dict[str, Any]:
        jobs = self._prepare_completion(request)
        choices: list[dict[str, Any]] = []
        prompt_tokens = completion_tokens = 0
        for p, (ids, options) in enumerate(jobs):
            texts = [""] * options.n
            reasons: list[str | None] = [None] * options.n
            counts = [0] * options.n
            async for chunk in self._generate(ids, options):
                texts[chunk.index] += chunk.text
                counts[chunk.index] = chunk.num_tokens
                reasons[chunk.index] = chunk.finish_reason or reasons[chunk.index]
            prefix = str(self.engine.tokenizer.decode(ids)) if request.echo else ""
            for i in range(options.n):
                choices.append(
                    {
                        "index": p * options.n + i,
                        "text": prefix + texts[i],
                        "finish_reason": reasons[i],
                        "logprobs": None,
                    }
                )
            prompt_tokens += len(ids)
            completion_tokens += sum(counts)
        return {
            "id": new_id("cmpl"),
            "object": "text_completion",
            "created": now(),
            "model": self.model_name,
            "choices": choices,
            "usage": _usage(prompt_tokens, completion_tokens),
        }

    async def completion_stream(self, request: CompletionRequest) -> AsyncIterator[dict[str, Any]]:
        ((ids, options),) = self._prepare_completion(request)
        chunks = self._generate(ids, options)
        first = await _first_or_error(chunks)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)

        async def body() -> AsyncIterator[dict[str, Any]]:
            base = {
                "id": new_id("cmpl"),
                "object": "text_completion",
                "created": now(),
                "model": self.model_name,
            }
            counts = [0] * options.n
            try:
                async for piece in _prepend(first, chunks):
                    counts[piece.index] = piece.num_tokens
                    yield {
                        **base,
                        "choices": [
                            {
                                "index": piece.index,
                                "text": piece.text,
                                "finish_reason": piece.finish_reason,
                                "logprobs": None,
                            }
                        ],
                    }
            finally:
                await chunks.aclose()
            if include_usage:
                yield {**base, "choices": [], "usage": _usage(len(ids), sum(counts))}

        return body()

    def _generate(
        self, prompt_ids: list[int], options: SamplingOptions, media: MediaInputs | None = None
    ) -> AsyncGenerator[GenerationChunk, None]:
        try:
            return self.engine.generate(prompt_ids, options, media)
        except Exception as exc:
            raise engine_error(exc) from None


async def _first_or_error(chunks: AsyncIterator[GenerationChunk]) -> GenerationChunk | None:
    """Wait for the first chunk so that a failure before any output is still an HTTP status."""
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None
    except ApiError:
        raise
    except Exception as exc:
        raise engine_error(exc) from None


async def _prepend(
    first: GenerationChunk | None, rest: AsyncIterator[GenerationChunk]
) -> AsyncIterator[GenerationChunk]:
    if first is not None:
        yield first
    async for chunk in rest:
        yield chunk


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
