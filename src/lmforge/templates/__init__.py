"""Chat templates: declarative formats, the batched encoder with labels, tools and reasoning.

``get_template(name)`` returns a registered :class:`Template`; ``resolve_template(name, tokenizer)``
also handles ``auto``/``None`` (the tokenizer's own jinja ``chat_template``). Both kinds are a
:class:`ChatTemplate`, the interface callers take.

The modules, bottom up: ``results`` (what templates return), ``slots`` (a declarative template's
fields), ``interface`` (:class:`ChatTemplate`), ``tokens`` (ids and labels, control tokens),
``render`` (text and trained spans; thinking and tool texts), ``parse`` (replies back into
parts), ``jinja`` (a template as a jinja ``chat_template``), ``template`` (:class:`Template`),
``families``/``registry`` (every named template), ``auto`` (the tokenizer's own template and
:func:`resolve_template`), ``forcing`` and ``suggest``.
"""

from __future__ import annotations

from lmforge.templates.auto import JinjaTemplate, resolve_template
from lmforge.templates.interface import ChatTemplate
from lmforge.templates.registry import get_template, list_templates
from lmforge.templates.results import EncodedSample, ParsedResponse
from lmforge.templates.template import Template

__all__ = [
    "ChatTemplate",
    "EncodedSample",
    "JinjaTemplate",
    "ParsedResponse",
    "Template",
    "get_template",
    "list_templates",
    "resolve_template",
]
