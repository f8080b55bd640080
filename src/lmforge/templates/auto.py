"""``template: auto``: render with the tokenizer's own jinja ``chat_template``.

The assistant spans (for the labels) are found by rendering growing prefixes of the
conversation: turn k's reply is what the rendering of messages[:k+1] adds after the
generation prompt of messages[:k]. Templates whose earlier turns change with what follows
(e.g. Qwen3 dropping old thinking blocks) are handled by searching for the reply text;
when neither works the error says to name a template instead. Named templates are faster
(one render per conversation) and carry tool/thinking parsing; auto follows any template
a model ships with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lmforge.conversation import Conversation
from lmforge.errors import ConfigError, DataError
from lmforge.templates.registry import TEMPLATES
from lmforge.templates.render import Rendered
from lmforge.templates.results import EncodedSample
from lmforge.templates.spec import Template

logger = logging.getLogger(__name__)


def tokenizer_template(tokenizer: Any, requested: str | None) -> Template:
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
    return JinjaTemplate(
        name="auto",
        families="the tokenizer's own chat_template",
        stop_words=(eos,) if eos else (),
        source=chat_template,
    )


@dataclass(frozen=True)
class JinjaTemplate(Template):
    """A Template whose rendering is the tokenizer's jinja ``chat_template``."""

    source: str = ""

    def encode_batch(
        self,
        tokenizer: Any,
        convs: list[Conversation],
        *,
        add_generation_prompt: bool = False,
        train_on_prompt: bool = False,
        mask_history: bool = False,
        enable_thinking: bool = True,
        split_special_tokens: bool | None = None,
    ) -> list[EncodedSample]:
        from lmforge.templates.plaintext import encode_conversations

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
        tokenizer: Any,
        conv: Conversation,
        *,
        add_generation_prompt: bool = False,
        enable_thinking: bool = True,
    ) -> str:
        return render_with_tokenizer(
            self.source, tokenizer, conv, add_generation_prompt, enable_thinking
        ).text

    def jinja_chat_template(self) -> str:
        return self.source


def _apply(
    tokenizer: Any, source: str, messages: list[dict[str, Any]], tools: Any, gen: bool, thinking: bool
) -> str:
    kwargs: dict[str, Any] = {"enable_thinking": thinking} if not thinking else {}
    return tokenizer.apply_chat_template(
        messages, tools=tools, chat_template=source, tokenize=False, add_generation_prompt=gen, **kwargs
    )


def render_with_tokenizer(
    source: str, tokenizer: Any, conv: Conversation, add_generation_prompt: bool, enable_thinking: bool
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


def _special_strings(tokenizer: Any) -> list[str]:
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
