"""``template: auto``: render with the tokenizer's own jinja ``chat_template``.

The assistant spans (for the labels) are found by rendering growing prefixes of the
conversation: turn k's reply is what the rendering of messages[:k+1] adds after the
generation prompt of messages[:k]. Templates whose earlier turns change with what follows
(e.g. Qwen3 dropping old thinking blocks) are handled by searching for the reply text;
when neither works the error says to name a template instead. Named templates are faster
(one render per conversation) and carry thinking-aware rendering; auto follows any template
a model ships with.

Also here: :func:`resolve_template`, which picks between a registered name and ``auto``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmforge.conversation import Conversation, ToolCall
from lmforge.errors import ConfigError, DataError
from lmforge.templates.interface import ChatTemplate
from lmforge.templates.parse import parse_reply
from lmforge.templates.registry import TEMPLATES, get_template
from lmforge.templates.render import TOOL_TEXTS, tool_marker_texts
from lmforge.templates.results import Rendered
from lmforge.templates.slots import ThinkingStyle
from lmforge.templates.tokens import encode_conversations

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lmforge.templates.results import EncodedSample, ParsedResponse

logger = logging.getLogger(__name__)


def resolve_template(name: str | None, tokenizer: PreTrainedTokenizerBase) -> ChatTemplate:
    """The template to train/serve with: a registered name, or the tokenizer's own (``auto``/None)."""
    if name is None or name in ("", "auto"):
        return tokenizer_template(tokenizer, requested=name)
    return get_template(name)


def tokenizer_template(tokenizer: PreTrainedTokenizerBase, requested: str | None) -> ChatTemplate:
    """The tokenizer's own template; with no template named and none in the tokenizer, ``empty``."""
    chat_template = getattr(tokenizer, "chat_template", None)
    if isinstance(chat_template, dict):  # several named templates: the default one
        chat_template = chat_template.get("default")
    if not chat_template:
        if requested == "auto":
            raise ConfigError(
                "template: auto needs a tokenizer with a chat_template, and this one has none; "
                "name a template instead (`lmforge template list`)"
            )
        logger.warning("no template given and the tokenizer has no chat_template: using 'empty'")
        return TEMPLATES["empty"]
    eos = str(getattr(tokenizer, "eos_token", None) or "")
    stop_words = (eos,) if eos else ()
    return JinjaTemplate(
        source=chat_template,
        stop_words=stop_words,
        tool_format=detect_tool_format(tokenizer, chat_template, stop_words),
    )


@dataclass(frozen=True)
class JinjaTemplate(ChatTemplate):
    """A chat template whose rendering is the tokenizer's jinja ``chat_template`` (``source``).

    Replies are parsed for tool calls in ``tool_format``: the format whose parser reads back a
    call as this very jinja writes it (:func:`detect_tool_format`: Qwen's ``<tool_call>`` tags,
    Llama's bare JSON, Mistral's ``[TOOL_CALLS]``, DeepSeek's special tokens, ...). None when the
    jinja writes no call any format reads: then a reply is never taken for a call, whatever
    tags it holds. Thinking is parsed as for every template (text before ``</think>``).
    """

    source: str
    stop_words: tuple[str, ...] = ()
    tool_format: str | None = None
    name: str = "auto"
    thinking: ThinkingStyle = "none"  # (a thinking block in a reply is split off all the same)

    def encode_batch(
        self,
        tokenizer: PreTrainedTokenizerBase,
        convs: list[Conversation],
        *,
        add_generation_prompt: bool = False,
        train_on_prompt: bool = False,
        mask_history: bool = False,
        enable_thinking: bool = True,
        split_special_tokens: bool | None = None,
    ) -> list[EncodedSample]:
        return encode_conversations(
            self,
            tokenizer,
            convs,
            lambda conv: render_with_tokenizer(
                self.source, tokenizer, conv, add_generation_prompt, enable_thinking
            ),
            split_special_tokens=split_special_tokens,
            train_on_prompt=train_on_prompt,
            mask_history=mask_history,
        )

    def render_text(
        self,
        tokenizer: PreTrainedTokenizerBase,
        conv: Conversation,
        *,
        add_generation_prompt: bool = False,
        enable_thinking: bool = True,
    ) -> str:
        return render_with_tokenizer(
            self.source, tokenizer, conv, add_generation_prompt, enable_thinking
        ).text

    def parse_response(self, text: str) -> ParsedResponse:
        """Content, thinking and tool calls of a reply, calls read in ``tool_format``."""
        return parse_reply(text, stop_words=self.stop_words, tool_format=self.tool_format)

    def jinja_chat_template(self) -> str:
        return self.source

    def marker_text(self) -> str:
        """The jinja source (which holds every marker it writes), the stop words and the tool texts."""
        tools = tool_marker_texts(TOOL_TEXTS[self.tool_format]) if self.tool_format else []
        return "\n".join([self.source, *self.stop_words, *tools])


# The call the tool format probe renders: a 9-character alphanumeric id, as Mistral's jinja demands.
_PROBE_CALL = ToolCall(name="lmforge_probe", arguments={"x": 1}, id="lmforge01")
_PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lmforge_probe",
            "description": "probe",
            "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
        },
    }
]


def detect_tool_format(
    tokenizer: PreTrainedTokenizerBase, source: str, stop_words: tuple[str, ...]
) -> str | None:
    """The tool format whose parser reads back a call that ``source`` renders; None when none does.

    A probe call is rendered after a user turn, with the arguments as an object and then as a
    JSON string (DeepSeek's jinja concatenates them), with empty and with no content; the reply
    it adds after the generation prompt is parsed as a served reply would be.
    """
    ask: list[dict[str, Any]] = [{"role": "user", "content": "probe"}]
    try:
        prompt = _apply(tokenizer, source, ask, _PROBE_TOOLS, True, True)
    except Exception as exc:  # a model's own jinja may refuse tools or this conversation
        logger.debug("chat_template cannot render the tool probe: %s", exc)
        return None
    probe = _PROBE_CALL
    for content in ("", None):
        for arguments in (probe.arguments, probe.arguments_json()):
            function = {"name": probe.name, "arguments": arguments}
            reply = {
                "role": "assistant",
                "content": content,
                "tool_calls": [{"type": "function", "id": probe.id, "function": function}],
            }
            try:
                full = _apply(tokenizer, source, [*ask, reply], _PROBE_TOOLS, False, True)
            except Exception as exc:  # the next variant may suit it
                logger.debug("chat_template cannot render the tool probe: %s", exc)
                continue
            text = full[len(prompt) :] if full.startswith(prompt) else full
            for name in PROBE_ORDER:
                calls = parse_reply(text.strip(), stop_words=stop_words, tool_format=name).tool_calls
                if [(c.name, c.arguments) for c in calls] == [(probe.name, probe.arguments)]:
                    return name
    return None


# Formats tried in turn: the tagged ones first; Llama 3's bare JSON before Llama 4's (whose parser
# also reads bare JSON, so Llama 3 is named for a template that writes only that).
PROBE_ORDER = ("qwen", "mistral", "deepseek", "glm4", "llama3", "llama4")


def _apply(
    tokenizer: PreTrainedTokenizerBase,
    source: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    gen: bool,
    thinking: bool,
) -> str:
    kwargs: dict[str, Any] = {"enable_thinking": thinking} if not thinking else {}
    listed: list[dict[Any, Any] | Callable[..., Any]] | None = list(tools) if tools else None
    text = tokenizer.apply_chat_template(
        messages, tools=listed, chat_template=source, tokenize=False, add_generation_prompt=gen, **kwargs
    )
    assert isinstance(text, str), "tokenize=False renders text"
    return text


def render_with_tokenizer(
    source: str,
    tokenizer: PreTrainedTokenizerBase,
    conv: Conversation,
    add_generation_prompt: bool,
    enable_thinking: bool,
) -> Rendered:
    data = conv.to_openai()
    messages, tools = data["messages"], data.get("tools")
    full = _apply(tokenizer, source, messages, tools, add_generation_prompt, enable_thinking)
    if add_generation_prompt:
        return Rendered(full, [], [(full, None)])
    specials = _special_strings(tokenizer)
    spans: list[tuple[int, int, int]] = []
    turn = 0
    cursor = 0
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _apply(tokenizer, source, messages[:k], tools, True, enable_thinking)
        upto = _apply(tokenizer, source, messages[: k + 1], tools, False, enable_thinking)
        start, end = _locate_reply(full, prompt, upto, message.get("content") or "", cursor, specials)
        if start < 0:
            raise DataError(
                f"template auto: cannot locate assistant turn {turn} of a conversation in the "
                "tokenizer's chat_template output (it rewrites earlier turns); name a template instead"
            )
        if end > start:
            spans.append((start, end, turn))
        cursor = max(cursor, end)
        turn += 1
    pieces: list[tuple[str, int | None]] = []
    pos = 0
    for start, end, t in spans:
        pieces += [(full[pos:start], None), (full[start:end], t)]
        pos = end
    pieces.append((full[pos:], None))
    return Rendered(full, spans, [p for p in pieces if p[0]])


def _special_strings(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Every special token's text, longest first (added ones too: Llama 3's <|eot_id|>)."""
    found = {str(s) for s in getattr(tokenizer, "all_special_tokens", []) if s}
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    found |= {str(t.content) for t in decoder.values() if getattr(t, "special", False) and t.content}
    return sorted(found, key=len, reverse=True)


def _locate_reply(
    full: str, prompt: str, upto: str, content: str, cursor: int, specials: list[str]
) -> tuple[int, int]:
    """Character span of one reply in ``full``; (-1, -1) when it cannot be found.

    The reply starts where its generation prompt ends, when that prompt is a prefix of the
    whole text (so a thinking block before the text is included); otherwise where its text
    is found. It ends after its text and the special token that closes it."""
    prompt_ok = full.startswith(prompt) and len(prompt) >= cursor
    start = len(prompt) if prompt_ok else cursor
    prefix_end = len(upto.rstrip()) if prompt_ok and full.startswith(upto) and upto.startswith(prompt) else -1
    text = content.strip()
    at = full.find(text, start) if text else -1
    if at < 0:
        if prefix_end > start:
            return start, prefix_end
        if text or not prompt_ok:
            return -1, -1
        # No text (a turn with only tool calls): the reply runs to the first special token.
        hits = [(full.find(tok, start), tok) for tok in specials]
        hits = [(pos, tok) for pos, tok in hits if pos >= start]
        if not hits:
            return -1, -1
        pos, tok = min(hits)
        return start, pos + len(tok)
    if not prompt_ok:
        start = at
    end = at + len(text)
    for token in specials:
        if full.startswith(token, end):
            end += len(token)
            break
    if prefix_end > start:
        end = min(end, prefix_end)
    return start, end
