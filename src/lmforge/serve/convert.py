"""OpenAI request bodies -> a Conversation and sampling options, with every check a client can fail.

Errors raised here name the field (``messages[2].role``, ``max_tokens``) so a client can fix
its request; they become HTTP 400 in OpenAI's error shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmforge.config.generating import GeneratingArguments
from lmforge.conversation import Conversation, role_order_error
from lmforge.infer.engine import SamplingOptions
from lmforge.serve.openai_errors import ApiError, bad_request
from lmforge.serve.protocol import (
    AudioUrlPart,
    ChatCompletionRequest,
    ImagePart,
    InputAudioPart,
    NamedToolChoice,
    VideoUrlPart,
    _SamplingFields,
)

MEDIA_KINDS = {ImagePart: "image", InputAudioPart: "audio", AudioUrlPart: "audio", VideoUrlPart: "video"}


@dataclass
class MediaRef:
    """A media part of a message: its kind, where it points, and the field it came from."""

    kind: str
    url: str | None
    data: str | None
    param: str


def media_refs(request: ChatCompletionRequest) -> list[MediaRef]:
    refs = []
    for i, message in enumerate(request.messages):
        if not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            param = f"messages[{i}].content[{j}]"
            if isinstance(part, ImagePart):
                refs.append(MediaRef("image", part.image_url.url, None, param))
            elif isinstance(part, InputAudioPart):
                refs.append(MediaRef("audio", None, part.input_audio.data, param))
            elif isinstance(part, AudioUrlPart):
                refs.append(MediaRef("audio", part.audio_url.url, None, param))
            elif isinstance(part, VideoUrlPart):
                refs.append(MediaRef("video", part.video_url.url, None, param))
    return refs


def to_conversation(request: ChatCompletionRequest) -> Conversation:
    """The request's messages and tools as a Conversation, refusing a malformed dialogue."""
    if not request.messages:
        raise bad_request("'messages' must contain at least one message", param="messages")
    if request.response_format is not None and request.response_format.type != "text":
        # ignoring it would hand back free text to a client that asked for JSON
        raise bad_request(
            f"response_format {request.response_format.type!r} is not supported by this server "
            "(only 'text'); ask for JSON in the messages instead",
            param="response_format",
        )
    raw: dict[str, Any] = {"messages": [m.model_dump(exclude_none=True) for m in request.messages]}
    tools = _selected_tools(request)
    if tools:
        raw["tools"] = tools
    try:
        conv = Conversation.from_openai(raw)
    except ValueError as exc:
        raise bad_request(str(exc), param="messages") from None
    check_role_order(conv)
    return conv


def _selected_tools(request: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    if not request.tools and request.tool_choice not in (None, "none", "auto"):
        raise bad_request(
            "'tool_choice' asks for a tool call, but the request has no 'tools'", param="tool_choice"
        )
    if not request.tools or request.tool_choice == "none":
        return None
    tools = [t.model_dump(exclude_none=True) for t in request.tools]
    if isinstance(request.tool_choice, NamedToolChoice):  # the reply is forced to call it (service)
        name = request.tool_choice.function.get("name")
        if not any(t["function"]["name"] == name for t in tools):
            raise bad_request(
                f"tool_choice names function {name!r}, which is not in 'tools'", param="tool_choice"
            )
    return tools


def forced_tool_call(request: ChatCompletionRequest) -> tuple[bool, str | None]:
    """Whether the reply must be a tool call, and of which function (None: any of the tools)."""
    if not request.tools:
        return False, None
    if isinstance(request.tool_choice, NamedToolChoice):
        return True, request.tool_choice.function.get("name")
    return request.tool_choice == "required", None


def check_role_order(conv: Conversation) -> None:
    """User first; assistant after user or tool; tool results only after a call; end on user or tool."""
    if not conv.messages:
        raise bad_request(
            "'messages' needs at least one user message, not only a system prompt", param="messages"
        )
    offset = 1 if conv.system is not None else 0
    bad = role_order_error(conv.messages)
    if bad is not None:
        where = f"messages[{bad[0] + offset}]"
        raise bad_request(f"{where}: {bad[1]}", param=where)
    if conv.messages[-1].role not in ("user", "tool"):
        where = f"messages[{len(conv.messages) - 1 + offset}]"
        raise bad_request(f"{where}: the last message must be from the user or a tool", param=where)


def sampling_options(
    request: _SamplingFields,
    defaults: GeneratingArguments,
    *,
    prompt_tokens: int,
    context_length: int,
    max_tokens: int | None,
    stop_strings: list[str],
    stop_token_ids: list[int],
) -> SamplingOptions:
    """Merge the request with the server's generation defaults and check the length budget."""
    if request.logprobs:
        raise bad_request("logprobs are not supported by this server", param="logprobs")
    if len(request.stop_list()) > 4:
        raise bad_request("'stop' takes at most 4 sequences", param="stop")
    if "" in request.stop_list():
        raise bad_request("'stop' sequences must not be empty", param="stop")
    if prompt_tokens >= context_length:
        raise ApiError(
            400,
            f"the prompt is {prompt_tokens} tokens, but this model's context is {context_length} tokens; "
            "shorten the messages",
            param="messages",
            code="context_length_exceeded",
        )
    room = context_length - prompt_tokens
    if max_tokens is not None and max_tokens > room:
        raise ApiError(
            400,
            f"this model's context is {context_length} tokens, but {prompt_tokens + max_tokens} were requested "
            f"({prompt_tokens} in the prompt, {max_tokens} to generate); lower max_tokens",
            param="max_tokens",
            code="context_length_exceeded",
        )
    if request.temperature is not None:
        temperature = request.temperature
    else:
        temperature = defaults.temperature if defaults.do_sample else 0.0
    return SamplingOptions(
        max_new_tokens=min(max_tokens or defaults.max_new_tokens or room, room),
        temperature=temperature,
        top_p=request.top_p if request.top_p is not None else defaults.top_p,
        top_k=request.top_k if request.top_k is not None else defaults.top_k,
        repetition_penalty=(
            request.repetition_penalty
            if request.repetition_penalty is not None
            else defaults.repetition_penalty
        ),
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        stop=request.stop_list() + [s for s in stop_strings if s not in request.stop_list()],
        stop_token_ids=list(stop_token_ids),
        seed=request.seed,
        n=request.n,
        skip_special_tokens=defaults.skip_special_tokens,
    )
