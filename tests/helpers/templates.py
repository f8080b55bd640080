"""Shared by several test folders."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from lmforge.conversation import Conversation
from lmforge.templates import get_template

DATE = "26 Jul 2024"


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "城市 / city"}},
            "required": ["city"],
        },
    },
}


def _tool_conv(system: bool) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
            ],
        },
        {"role": "tool", "content": '{"temperature": 21, "sky": "clear"}'},
        {"role": "assistant", "content": "It is 21 °C and clear in Paris."},
    ]
    if system:
        messages.insert(0, {"role": "system", "content": "You are a weather bot."})
    return {"messages": messages, "tools": [WEATHER_TOOL]}


CASES: dict[str, dict[str, Any]] = {
    "single": {
        "messages": [
            {"role": "user", "content": "Hi there!"},
            {"role": "assistant", "content": "Hello! How can I help?"},
        ]
    },
    "system": {
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Name a prime number."},
            {"role": "assistant", "content": "7"},
        ]
    },
    "three_turns": {
        "messages": [
            {"role": "user", "content": "Count to two."},
            {"role": "assistant", "content": "1, 2."},
            {"role": "user", "content": "Now three."},
            {"role": "assistant", "content": "1, 2, 3."},
            {"role": "user", "content": "And backwards?"},
            {"role": "assistant", "content": "3, 2, 1."},
        ]
    },
    "chinese": {
        "messages": [
            {"role": "system", "content": "你是一个乐于助人的助手。"},
            {"role": "user", "content": "北京是哪个国家的首都？"},
            {"role": "assistant", "content": "北京是中国的首都。"},
            {"role": "user", "content": "上海呢？"},
            {"role": "assistant", "content": "上海不是首都，它是中国最大的城市之一。"},
        ]
    },
    "tools": _tool_conv(system=False),
    "tools_system": _tool_conv(system=True),
    "thinking": {
        "messages": [
            {"role": "user", "content": "What is 2+3?"},
            {"role": "assistant", "content": "5", "reasoning_content": "2 plus 3 is 5."},
            {"role": "user", "content": "And 4*5?"},
            {"role": "assistant", "content": "20", "reasoning_content": "4 times 5 is 20."},
        ]
    },
    "thinking_inline": {
        "messages": [
            {"role": "system", "content": "Think first."},
            {"role": "user", "content": "What is 2+3?"},
            {"role": "assistant", "content": "<think>\n2 plus 3 is 5.\n</think>\n\n5"},
            {"role": "user", "content": "And 4*5?"},
            {"role": "assistant", "content": "<think>\n4 times 5 is 20.\n</think>\n\n20"},
        ]
    },
    "thinking_tools": {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": "I should call the tool.",
                "tool_calls": [
                    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                ],
            },
            {"role": "tool", "content": '{"temperature": 21}'},
            {"role": "assistant", "content": "21 °C.", "reasoning_content": "The tool says 21."},
        ],
        "tools": [WEATHER_TOOL],
    },
}


CASES["image"] = {
    "messages": [
        {"role": "user", "content": "<image>What is in this picture?"},
        {"role": "assistant", "content": "A cat on a sofa."},
        {"role": "user", "content": "<image>And here?"},
        {"role": "assistant", "content": "A dog."},
    ]
}


CASES["audio"] = {
    "messages": [
        {"role": "user", "content": "<audio>What's that sound?"},
        {"role": "assistant", "content": "Glass breaking."},
        {"role": "user", "content": "<audio>How about this one?"},
        {"role": "assistant", "content": "Someone clearing their throat."},
    ]
}


CASES["tool_result"] = {
    "messages": [
        {"role": "system", "content": "Use the tool output."},
        {"role": "user", "content": "Temperature?"},
        {"role": "assistant", "content": "Let me check."},
        {"role": "tool", "content": "21C"},
        {"role": "assistant", "content": "It is 21C."},
    ]
}


BASIC = ("single", "system", "three_turns", "chinese")


TOOLS = ("tools", "tools_system")


THINKING = ("thinking", "thinking_inline", "thinking_tools")


@functools.cache
def _tokenizer(asset_name: str, chat_template: str | None = None) -> Any:
    from transformers import AutoTokenizer

    from lmforge.assets import get_asset

    tok = AutoTokenizer.from_pretrained(get_asset(asset_name))
    if chat_template is not None:
        tok = copy.copy(tok)
        tok.chat_template = chat_template
    return tok


def _prompt_part(conv: dict[str, Any]) -> dict[str, Any]:
    """The conversation up to (not including) its final assistant turn."""
    out = copy.deepcopy(conv)
    while out["messages"] and out["messages"][-1]["role"] == "assistant":
        out["messages"].pop()
    return out


MISTRAL_REFERENCE = Path(__file__).parents[1] / "templates" / "mistral_common.json"


MISTRAL_TOOL_ID = "abc123XYZ"


def _mistral_cases() -> dict[str, dict[str, Any]]:
    cases = {name: copy.deepcopy(CASES[name]) for name in BASIC + TOOLS}
    for name in TOOLS:
        for m in cases[name]["messages"]:
            for c in m.get("tool_calls", []):
                c["id"] = MISTRAL_TOOL_ID
            if m["role"] == "tool":
                m["tool_call_id"] = MISTRAL_TOOL_ID
    return cases


FAMILY_ASSET = {
    "qwen": "qwen2_5",
    "qwen2_vl": "qwen2_5",
    "qwen2_audio": "qwen2_5",
    "qwen2_omni": "qwen2_5",
    "chatml": "qwen2_5",
    "yi": "qwen2_5",
    "qwen3": "qwen3",
    "qwen3_nothink": "qwen3",
    "llama3": "llama3_2",
    "llama3_2": "llama3_2",
    "mllama": "llama3_2",
    "llama4": "llama3_2",
    "deepseek": "deepseek_llm",
    "deepseek3": "deepseek_v3",
    "deepseekr1": "deepseek_r1",
    "chatglm3": "chatglm3",
    "llama2": "mistral_v1",
    "mistral": "mistral_v3",
}


def tokenizer(asset_name: str) -> Any:
    return _tokenizer(asset_name)  # one session-wide cache of loaded tokenizers, shared by the template tests


def tok_for(name: str) -> Any:
    return tokenizer(FAMILY_ASSET.get(name, "qwen2_5"))


def _llama_tokenizer() -> Any:
    return _tokenizer("llama3_2")  # a vocabulary with both BOS and EOS


def _cases(name: str) -> tuple[str, ...]:
    template = get_template(name)
    cases = BASIC + TOOLS
    if template.thinking != "none":
        cases += THINKING
    return cases


def jinja_cases(name: str) -> list[tuple[str, str]]:
    """The (case, part) pairs a template's jinja is checked on."""
    return [
        (case, part)
        for case in _cases(name)
        for part in ("prompt", "full", "prompt_nothink", "full_nothink")
        if not (part.endswith("nothink") and not get_template(name).no_thinking_prefix)
    ]


def check_jinja(name: str, case: str, part: str) -> None:
    """transformers rendering the template's jinja gives exactly lmforge's text."""
    template = get_template(name)
    tok = copy.copy(_llama_tokenizer())
    conv = CASES[case] if part.startswith("full") else _prompt_part(CASES[case])
    gen = part.startswith("prompt")
    thinking = not part.endswith("nothink")
    ours = template.render_text(
        tok, Conversation.from_openai(conv), add_generation_prompt=gen, enable_thinking=thinking
    )
    extra = {} if thinking else {"enable_thinking": False}
    theirs = tok.apply_chat_template(
        Conversation.from_openai(conv).to_openai()["messages"],
        tools=conv.get("tools"),
        chat_template=template.jinja_chat_template(),
        tokenize=False,
        add_generation_prompt=gen,
        **extra,
    )
    assert theirs == ours, f"{name} {case} {part}"
