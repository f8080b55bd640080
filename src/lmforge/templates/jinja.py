"""Write a declarative template as a jinja ``chat_template``, for tokenizers saved by export.

The jinja follows the same fields and rules as :mod:`.render`, so plain transformers or vLLM
given the exported tokenizer prompt the model exactly as lmforge trained it (tests compare
the two renderings on the same conversations). Limits: message content must be a string
(media placeholders stay as written), and Mistral tool results that are JSON are inserted
as written rather than re-serialized.
"""

from __future__ import annotations

import json
import re

from lmforge.templates.render import LLAMA3_TOOLS_INTRO, QWEN_TOOLS_INTRO, QWEN_TOOLS_OUTRO
from lmforge.templates.slots import TemplateSlots

_PLACEHOLDER = re.compile(r"\{(content|bos|eos|tools_header|system|tools|index|turn)\}")
_SPECIAL = {"bos": "(bos_token or '')", "eos": "(eos_token or '')"}


def _lit(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _slot(fmt: str, **exprs: str) -> str:
    """A jinja expression for a slot string; each placeholder becomes the given expression."""
    parts: list[str] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(fmt):
        if match.start() > pos:
            parts.append(_lit(fmt[pos : match.start()]))
        key = match.group(1)
        parts.append(exprs.get(key, _SPECIAL.get(key, "''")))
        pos = match.end()
    if pos < len(fmt):
        parts.append(_lit(fmt[pos:]))
    return " + ".join(f"({p})" for p in parts) if parts else "''"


_ARGS = "(f.arguments if f.arguments is string else f.arguments | tojson)"
_FUNC = "{%- set f = call.function if call.function is defined else call -%}"

_DEFINITIONS = {
    "qwen": (
        "{%- set ns.defs = " + _lit(QWEN_TOOLS_INTRO) + " -%}"
        "{%- for t in tools -%}{%- set ns.defs = ns.defs + '\\n' + (t | tojson) -%}{%- endfor -%}"
        "{%- set ns.defs = ns.defs + " + _lit(QWEN_TOOLS_OUTRO) + " -%}"
    ),
    "default": (
        "{%- set ns.defs = 'You can use these tools, described as JSON schemas:\\n' -%}"
        "{%- for t in tools -%}{%- if not loop.first -%}{%- set ns.defs = ns.defs + '\\n' -%}{%- endif -%}"
        "{%- set ns.defs = ns.defs + ((t.function if t.function is defined else t) | tojson) -%}{%- endfor -%}"
        "{%- set ns.defs = ns.defs + "
        + _lit(
            '\n\nTo call a tool, answer with <tool_call>{"name": <tool name>, "arguments": <JSON object>}'
            "</tool_call>, one block per call."
        )
        + " -%}"
    ),
    "llama3": (
        "{%- set ns.defs = " + _lit(LLAMA3_TOOLS_INTRO) + " -%}"
        "{%- for t in tools -%}{%- set ns.defs = ns.defs + (t | tojson(indent=4)) + '\\n\\n' -%}{%- endfor -%}"
    ),
    "glm4": (
        "{%- set ns.defs = '# 可用工具' -%}"
        "{%- for t in tools -%}{%- set f = t.function if t.function is defined else t -%}"
        "{%- set ns.defs = ns.defs + '\\n\\n## ' + f.name + '\\n\\n' + (f | tojson(indent=4)) + "
        + _lit("\n在调用上述函数时，请使用 Json 格式表示调用的参数。")
        + " -%}{%- endfor -%}"
    ),
    "mistral": (
        "{%- set ns.defs = '[AVAILABLE_TOOLS] [' -%}"
        "{%- for t in tools -%}{%- if not loop.first -%}{%- set ns.defs = ns.defs + ', ' -%}{%- endif -%}"
        "{%- set ns.defs = ns.defs + ((t if t.function is defined else {'type': 'function', 'function': t}) | tojson) -%}"
        "{%- endfor -%}{%- set ns.defs = ns.defs + '][/AVAILABLE_TOOLS]' -%}"
    ),
    "deepseek": "{%- set ns.defs = '' -%}",
}
_DEFINITIONS["llama4"] = _DEFINITIONS["llama3"]


def _joined_calls(block: str) -> str:
    """Calls as blocks joined by newlines after the content (Qwen, GLM-4, default)."""
    return (
        "{%- set ns.body = content -%}{%- for call in message.tool_calls -%}"
        + _FUNC
        + "{%- if ns.body -%}{%- set ns.body = ns.body + '\\n' -%}{%- endif -%}"
        "{%- set ns.body = ns.body + " + block + " -%}{%- endfor -%}"
    )


_CALLS = {
    "qwen": _joined_calls(
        '\'<tool_call>\\n{"name": "\' + f.name + \'", "arguments": \' + ' + _ARGS + " + '}\\n</tool_call>'"
    ),
    "default": _joined_calls(
        '\'<tool_call>{"name": "\' + f.name + \'", "arguments": \' + ' + _ARGS + " + '}</tool_call>'"
    ),
    "glm4": _joined_calls("f.name + '\\n' + " + _ARGS),
    "llama3": (
        "{%- if message.tool_calls | length != 1 -%}"
        "{{- raise_exception('the llama3 tool format has one tool call per assistant turn') -}}{%- endif -%}"
        "{%- set call = message.tool_calls[0] -%}"
        + _FUNC
        + '{%- set ns.body = \'{"name": "\' + f.name + \'", "parameters": \' + '
        + _ARGS
        + " + '}' -%}"
    ),
    "llama4": (
        "{%- set ns.body = '<|python_start|>' + content + '<|python_end|>' -%}"
        "{%- for call in message.tool_calls -%}"
        + _FUNC
        + '{%- set ns.body = ns.body + \'{"name": "\' + f.name + \'", "parameters": \' + '
        + _ARGS
        + " + '}' -%}"
        "{%- endfor -%}"
    ),
    "mistral": (
        "{%- set ns.body = (content + ' ' if content else '') + '[TOOL_CALLS] [' -%}"
        "{%- for call in message.tool_calls -%}"
        + _FUNC
        + "{%- if not loop.first -%}{%- set ns.body = ns.body + ', ' -%}{%- endif -%}"
        '{%- set ns.body = ns.body + \'{"name": "\' + f.name + \'", "arguments": \' + '
        + _ARGS
        + " + ((', \"id\": \"' + call.id + '\"') if call.id is defined and call.id else '') + '}' -%}"
        "{%- endfor -%}{%- set ns.body = ns.body + ']' -%}"
    ),
    "deepseek": (
        "{%- set ns.body = content + '<｜tool▁calls▁begin｜>' -%}"
        "{%- for call in message.tool_calls -%}"
        + _FUNC
        + "{%- if not loop.first -%}{%- set ns.body = ns.body + '\\n' -%}{%- endif -%}"
        "{%- set ns.body = ns.body + '<｜tool▁call▁begin｜>function<｜tool▁sep｜>' + f.name + "
        "'\\n```json\\n' + " + _ARGS + " + '\\n```<｜tool▁call▁end｜>' -%}"
        "{%- endfor -%}{%- set ns.body = ns.body + '<｜tool▁calls▁end｜>' -%}"
    ),
}

_RESULTS = {
    "llama3": "(message.content | tojson)",
    "llama4": "(message.content | tojson)",
    "mistral": (
        "('{\"content\": ' + (message.content if message.content.strip()[:1] in ['{', '['] "
        "else (message.content | tojson)) + ((', \"call_id\": \"' + message.tool_call_id + '\"') "
        "if message.tool_call_id is defined and message.tool_call_id else '') + '}')"
    ),
}


def _think(reasoning: str) -> str:
    return "'<think>\\n' + " + reasoning + ".strip('\\n') + '\\n</think>\\n\\n'"


def _assistant_body(t: TemplateSlots) -> str:
    """Sets ``think`` and ``content`` for the current assistant message."""
    head = (
        "{%- set content = message.content or '' -%}"
        "{%- set reasoning = message.reasoning_content if message.reasoning_content is defined "
        "and message.reasoning_content is not none else none -%}"
    )
    if t.thinking == "qwen3":
        return head + (
            "{%- if reasoning is none -%}{%- if '</think>' in content -%}"
            "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') -%}"
            "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
            "{%- else -%}{%- set reasoning = '' -%}{%- endif -%}{%- endif -%}"
            "{%- if loop.index0 > ns.last_query and (loop.last or reasoning) -%}"
            "{%- set think = " + _think("reasoning") + " -%}{%- set content = content.lstrip('\\n') -%}"
            "{%- else -%}{%- set think = '' -%}{%- endif -%}"
        )
    if t.thinking == "deepseekr1":
        return head + (
            "{%- set think = '' -%}"
            "{%- if not loop.last -%}"
            "{%- if reasoning is none and '</think>' in content -%}"
            "{%- set content = content.split('</think>')[-1] -%}{%- endif -%}"
            "{%- elif reasoning -%}{%- set think = " + _think("reasoning") + " -%}"
            "{%- elif enable_thinking is defined and enable_thinking is false -%}"
            "{%- set think = " + _lit(t.no_thinking_prefix) + " -%}{%- endif -%}"
        )
    strip = "{%- set content = content | trim -%}" if t.strip_content else ""
    return head + strip + "{%- set think = " + _think("reasoning") + " if reasoning else '' -%}"


def to_jinja(t: TemplateSlots) -> str:
    strip = "| trim" if t.strip_content else ""
    merge = t.system_style in ("first_user", "last_user", "none")
    out: list[str] = [
        f"{{#- lmforge template '{t.name}': written from lmforge's own definition -#}}",
        "{%- set ns = namespace(defs='', body='', first_user=-1, last_user=-1, last_query=-1, found=false, turn=0) -%}",
        "{%- if messages and messages[0].role == 'system' -%}",
        f"{{%- set system_text = messages[0].content {strip} -%}}{{%- set msgs = messages[1:] -%}}",
        "{%- set has_system = true -%}",
        "{%- else -%}",
        f"{{%- set system_text = {_lit(t.default_system)} {strip} -%}}{{%- set msgs = messages -%}}",
        f"{{%- set has_system = {'true' if t.default_system else 'false'} -%}}",
        "{%- endif -%}",
        "{%- if tools -%}" + _DEFINITIONS[t.tool_format] + "{%- endif -%}",
    ]
    if t.tools_in == "system":
        out.append(
            "{%- if ns.defs -%}{%- if has_system -%}"
            f"{{%- set system_text = {_slot(t.system_with_tools, content='system_text', tools='ns.defs')} -%}}"
            f"{{%- else -%}}{{%- set system_text = {_slot(t.system_tools_only, tools='ns.defs')} -%}}"
            "{%- endif -%}{%- set has_system = true -%}{%- endif -%}"
        )
    out.append("{{- " + _slot(t.prefix) + " -}}")
    if t.system_style == "block":
        cond = "true" if t.system_always else "has_system"
        header = f"({_lit(t.system_tools_header)} if tools else '')"
        out.append(
            f"{{%- if {cond} -%}}{{{{- {_slot(t.system, content='system_text', tools_header=header)} -}}}}"
            "{%- endif -%}"
        )
    # Indices of the first/last user message and of the last real query (Qwen3's rule).
    out.append(
        "{%- for m in msgs -%}{%- if m.role == 'user' -%}"
        "{%- if ns.first_user < 0 -%}{%- set ns.first_user = loop.index0 -%}{%- endif -%}"
        "{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}"
        "{%- set ns.last_query = (msgs | length) - 1 -%}"
        "{%- for m in msgs | reverse -%}{%- if not ns.found and m.role == 'user' and not "
        "((m.content or '').startswith('<tool_response>') and (m.content or '').endswith('</tool_response>')) -%}"
        "{%- set ns.found = true -%}{%- set ns.last_query = (msgs | length) - 1 - loop.index0 -%}"
        "{%- endif -%}{%- endfor -%}"
    )
    system_at = "ns.last_user" if t.system_style == "last_user" else "ns.first_user"
    tools_at = "ns.last_user" if t.tools_in == "before_last_user" else "ns.first_user"
    out.append("{%- for message in msgs -%}")
    out.append(
        "{%- set prev = msgs[loop.index0 - 1].role if not loop.first else none -%}"
        "{%- set next = msgs[loop.index0 + 1].role if not loop.last else none -%}"
    )
    # user
    out.append(f"{{%- if message.role == 'user' -%}}{{%- set text = (message.content or '') {strip} -%}}")
    if t.tools_in == "first_user":
        out.append(
            "{%- if loop.index0 == ns.first_user and ns.defs -%}{%- set text = ns.defs + text -%}{%- endif -%}"
        )
    if merge:
        out.append(
            f"{{%- if loop.index0 == {system_at} and has_system -%}}"
            f"{{%- set text = {_slot(t.system_user_join, content='text', system='system_text')} -%}}"
            "{%- endif -%}"
        )
    if t.tools_in in ("before_first_user", "before_last_user"):
        out.append(f"{{%- if loop.index0 == {tools_at} and ns.defs -%}}{{{{- ns.defs -}}}}{{%- endif -%}}")
    out.append(
        "{%- set ns.turn = ns.turn + 1 -%}{{- "
        + _slot(t.user, content="text", turn="(ns.turn | string)")
        + " -}}"
    )
    # tool
    result = _RESULTS.get(t.tool_format, "(message.content or '')")
    out.append(
        "{%- elif message.role == 'tool' -%}"
        f"{{%- if prev != 'tool' -%}}{{{{- {_slot(t.tool_group_start)} -}}}}{{%- endif -%}}"
        f"{{{{- {_slot(t.tool, content=result)} -}}}}"
        f"{{%- if next != 'tool' -%}}{{{{- {_slot(t.tool_group_end)} -}}}}{{%- endif -%}}"
    )
    # assistant
    header = _slot(t.assistant_header)
    if t.assistant_header_after_tool is not None:
        header = f"({_slot(t.assistant_header_after_tool)} if prev == 'tool' else {header})"
    tool_slot = t.assistant_tool_call if t.assistant_tool_call is not None else t.assistant
    out.append(
        "{%- elif message.role == 'assistant' -%}"
        f"{{{{- {header} -}}}}"
        + _assistant_body(t)
        + "{%- if message.tool_calls -%}"
        + _CALLS[t.tool_format]
        + f"{{{{- {_slot(tool_slot, content='think + ns.body')} -}}}}"
        + f"{{%- else -%}}{{{{- {_slot(t.assistant, content='think + content')} -}}}}{{%- endif -%}}"
        + f"{{{{- {_slot(t.assistant_end)} + {_slot(t.assistant_after)} -}}}}"
        + f"{{%- if loop.last and not add_generation_prompt -%}}{{{{- {_slot(t.conversation_end)} -}}}}{{%- endif -%}}"
    )
    out.append("{%- endif -%}{%- endfor -%}")
    gen_header = _slot(t.assistant_header)
    if t.assistant_header_after_tool is not None:
        gen_header = (
            f"({_slot(t.assistant_header_after_tool)} if msgs and msgs[-1].role == 'tool' else {gen_header})"
        )
    out.append(
        f"{{%- if add_generation_prompt -%}}{{{{- {gen_header} -}}}}"
        "{%- if enable_thinking is defined and enable_thinking is false -%}"
        f"{{{{- {_slot(t.no_thinking_prefix)} -}}}}{{%- endif -%}}{{%- endif -%}}"
    )
    return "".join(out)
