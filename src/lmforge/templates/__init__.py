"""Chat templates: declarative formats, the batched encoder with labels, tools and reasoning.

``get_template(name)`` returns a registered :class:`Template`; ``resolve_template(name, tokenizer)``
also handles ``auto``/``None`` (the tokenizer's own jinja ``chat_template``).
"""

from __future__ import annotations

from typing import Any

from lmforge.errors import ConfigError, did_you_mean
from lmforge.templates.registry import TEMPLATES
from lmforge.templates.results import EncodedSample, ParsedResponse
from lmforge.templates.spec import Template

__all__ = [
    "EncodedSample",
    "ParsedResponse",
    "Template",
    "get_template",
    "list_templates",
    "resolve_template",
]


def list_templates() -> list[Template]:
    return [TEMPLATES[name] for name in sorted(TEMPLATES)]


def get_template(name: str) -> Template:
    """The registered template called ``name``; ConfigError with a did-you-mean otherwise."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ConfigError(
            f"template: unknown template {name!r}{did_you_mean(name, TEMPLATES)}; `lmforge template list` shows them all"
        ) from None


def resolve_template(name: str | None, tokenizer: Any) -> Template:
    """The template to train/serve with: a registered name, or the tokenizer's own (``auto``/None)."""
    if name not in (None, "", "auto"):
        return get_template(name)  # type: ignore[arg-type]
    from lmforge.templates.auto import tokenizer_template

    return tokenizer_template(tokenizer, requested=name)
