"""Proof: lmforge templates give the same token ids as each family's official chat template.

For every (template, case) pair, the conversation is rendered by lmforge and by
``tokenizer.apply_chat_template`` with the official jinja template of a real tokenizer,
once as a generation prompt (up to the last user/tool turn) and once whole. The ids must be
identical; the few documented departures (see docs/templates.md) are spelled out below.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from lmforge.conversation import Conversation
from lmforge.templates import get_template
from tests.helpers.templates import (
    BASIC,
    CASES,
    DATE,
    MISTRAL_REFERENCE,
    THINKING,
    TOOLS,
    _mistral_cases,
    _prompt_part,
    _tokenizer,
)

# Media: lmforge data carries "<image>"/"<audio>" placeholders; official templates take content parts.


def _media_parts(content: Any) -> Any:
    for kind in ("image", "audio"):
        tag = f"<{kind}>"
        if isinstance(content, str) and content.startswith(tag):
            return [{"type": kind, kind: "file.bin"}, {"type": "text", "text": content[len(tag) :]}]
    return content


# template -> (asset holding the official chat template, cases, extra apply_chat_template kwargs)
PROOFS: dict[str, tuple[str, tuple[str, ...]]] = {
    "qwen": ("qwen2_5", BASIC + TOOLS),
    "qwen3": ("qwen3", BASIC + TOOLS + THINKING),
    "llama3": ("llama3", BASIC),
    "llama3_2": ("llama3_2", BASIC + TOOLS),
    "deepseek": ("deepseek_llm", BASIC),
    "deepseek3": ("deepseek_v3", BASIC),
    "deepseekr1": ("deepseek_r1", BASIC + TOOLS + ("thinking", "thinking_inline")),
    "chatglm3": ("chatglm3", BASIC),
    "gemma3": ("gemma3", BASIC + ("image",)),
    # SmolLM2-Instruct's ChatML template adds its own default system prompt, so only
    # conversations that bring a system prompt are ChatML proper.
    "chatml": ("smollm2", ("system", "chinese", "tool_result")),
    # Entries of lmforge.templates.families proven against the tokenizers they came with.
    "smollm2": ("smollm2", BASIC + ("tool_result",)),
    "smollm": ("smollm2", ("system", "chinese", "tool_result")),
    "intern2": ("internlm2", BASIC + ("tool_result",)),
    "cohere": ("command_r", BASIC),
    "ministral": ("mistral_nemo", BASIC),
}


def _official_messages(template: str, conv: dict[str, Any]) -> dict[str, Any]:
    """The same conversation in the shape the official template expects."""
    conv = copy.deepcopy(conv)
    for m in conv["messages"]:
        m["content"] = _media_parts(m["content"])
        if template in ("deepseek3", "deepseekr1") and m.get("tool_calls"):
            # DeepSeek's templates concatenate arguments as a string and test `content is none`.
            for c in m["tool_calls"]:
                c["function"]["arguments"] = json.dumps(c["function"]["arguments"], ensure_ascii=False)
            m["content"] = None if template == "deepseek3" else m["content"]
    return conv


def _official_ids(tok: Any, conv: dict[str, Any], add_generation_prompt: bool, **kwargs: Any) -> list[int]:
    return tok.apply_chat_template(
        conv["messages"],
        tools=conv.get("tools"),
        add_generation_prompt=add_generation_prompt,
        tokenize=True,
        return_dict=False,
        date_string=DATE,
        **kwargs,
    )


# DeepSeek-R1's official template cuts the thinking out of the final turn as well; we keep
# it there so that it is trained (test_deepseekr1_trains_final_thinking).
DEPARTURES = {("deepseekr1", "thinking", "full"), ("deepseekr1", "thinking_inline", "full")}
# Mistral Nemo's template writes the system prompt only when the last message is a user message,
# so a whole conversation (ending with a reply) loses it; we keep it with the last user message,
# as in its generation prompt (proven above) and as mistral-common does.
DEPARTURES |= {("ministral", "system", "full"), ("ministral", "chinese", "full")}
PARAMS = [
    pytest.param(name, asset_name, case, part, id=f"{name}-{case}-{part}")
    for name, (asset_name, cases) in PROOFS.items()
    for case in cases
    for part in ("prompt", "full")
    if (name, case, part) not in DEPARTURES
]


@pytest.mark.parametrize(("name", "asset_name", "case", "part"), PARAMS)
def test_same_ids_as_official_template(name: str, asset_name: str, case: str, part: str) -> None:
    tok = _tokenizer(asset_name)
    template = get_template(name)
    conv = CASES[case] if part == "full" else _prompt_part(CASES[case])
    official_conv = _official_messages(name, conv)
    gen = part == "prompt"
    ours = template.encode(tok, Conversation.from_openai(conv), add_generation_prompt=gen)
    official = _official_ids(tok, official_conv, gen)
    expected = official
    if part == "full" and name == "llama3":
        # Meta-Llama-3-8B-Instruct's template appends the assistant header unconditionally.
        header = tok(template.assistant_header, add_special_tokens=False)["input_ids"]
        assert official[-len(header) :] == header
        expected = official[: -len(header)]
    if part == "full" and name == "chatglm3":
        # ChatGLM3 ends a training sample with EOS (its fine-tuning code does); the chat template has none.
        expected = official + [tok.eos_token_id]
    assert ours.input_ids == expected, (
        f"\nours:     {tok.decode(ours.input_ids)!r}\nofficial: {tok.decode(expected)!r}"
    )
    assert len(ours.labels) == len(ours.input_ids)
    if gen:
        assert all(label == -100 for label in ours.labels)


@pytest.mark.parametrize("enable_thinking", [True, False], ids=["thinking_on", "thinking_off"])
def test_qwen3_enable_thinking_prompt(enable_thinking: bool) -> None:
    tok = _tokenizer("qwen3")
    conv = _prompt_part(CASES["three_turns"])
    ours = get_template("qwen3").encode(
        tok, Conversation.from_openai(conv), add_generation_prompt=True, enable_thinking=enable_thinking
    )
    assert ours.input_ids == _official_ids(tok, conv, True, enable_thinking=enable_thinking)


def test_deepseekr1_trains_final_thinking() -> None:
    tok = _tokenizer("deepseek_r1")
    conv = CASES["thinking"]
    template = get_template("deepseekr1")
    ours = template.encode(tok, Conversation.from_openai(conv))
    prompt = _official_ids(tok, _official_messages("deepseekr1", _prompt_part(conv)), True)
    reply = tok("<think>\n4 times 5 is 20.\n</think>\n\n20<｜end▁of▁sentence｜>", add_special_tokens=False)[
        "input_ids"
    ]
    assert ours.input_ids == prompt + reply
    assert ours.labels[len(prompt) :] == reply


def _wheel_template(module: str, attribute: str) -> str:
    import importlib

    mod = importlib.import_module(module)
    if attribute == "chat_template":
        return mod.chat_template
    return getattr(mod, attribute).default_chat_template.fget(None)  # type: ignore[union-attr]


LLAMA4_CASES = BASIC + TOOLS


@pytest.mark.parametrize("part", ["prompt", "full"])
@pytest.mark.parametrize("case", LLAMA4_CASES)
def test_llama4_matches_transformers_template(case: str, part: str) -> None:
    """Llama 4's official template ships in transformers; rendered with the Llama 3 vocabulary."""
    official_template = _wheel_template("transformers.models.llama4.processing_llama4", "chat_template")
    tok = _tokenizer("llama3_2", official_template)
    conv = CASES[case] if part == "full" else _prompt_part(CASES[case])
    gen = part == "prompt"
    template = get_template("llama4")
    ours_text = template.render_text(tok, Conversation.from_openai(conv), add_generation_prompt=gen)
    official_text = tok.apply_chat_template(
        conv["messages"], tools=conv.get("tools"), tokenize=False, add_generation_prompt=gen
    )
    assert ours_text == official_text
    ours = template.encode(tok, Conversation.from_openai(conv), add_generation_prompt=gen)
    assert ours.input_ids == _official_ids(tok, conv, gen)


@pytest.mark.parametrize("part", ["prompt", "full"])
@pytest.mark.parametrize("case", BASIC + ("audio",))
def test_qwen2_audio_matches_transformers_template(case: str, part: str) -> None:
    official_template = _wheel_template(
        "transformers.models.qwen2_audio.processing_qwen2_audio", "Qwen2AudioProcessor"
    )
    tok = _tokenizer("qwen2_5", official_template)
    conv = CASES[case] if part == "full" else _prompt_part(CASES[case])
    gen = part == "prompt"
    ours = get_template("qwen2_audio").encode(tok, Conversation.from_openai(conv), add_generation_prompt=gen)
    assert ours.input_ids == _official_ids(tok, _official_messages("qwen2_audio", conv), gen)


def test_assets_are_the_official_templates() -> None:
    """Guard: the proofs above must run against the families' own templates, not ours."""
    from lmforge.templates.registry import TEMPLATES

    ours = {t.jinja_chat_template() for t in TEMPLATES.values()}
    for asset_name in {a for a, _ in PROOFS.values()}:
        chat_template = _tokenizer(asset_name).chat_template or ""
        if isinstance(chat_template, dict):  # named templates (Cohere's default / tool_use / rag)
            chat_template = chat_template["default"]
        assert "{%" in chat_template and chat_template not in ours, asset_name


# ---- Mistral: the official reference is mistral-common's tokenizer (no jinja template ships) ----
# mistral-common is not a dependency, so its token ids for these conversations are stored in
# tests/templates/mistral_common.json; regenerate with
#   LMFORGE_REGEN_MISTRAL=1 PYTHONPATH=<dir with mistral_common installed> pytest tests/templates/test_official.py -k mistral


def _mistral_common_ids(conv: dict[str, Any], generation: bool) -> list[int]:  # pragma: no cover - regen only
    import mistral_common
    from mistral_common.protocol.instruct.messages import AssistantMessage, ToolMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest, InstructRequest
    from mistral_common.protocol.instruct.tool_calls import Function, FunctionCall, Tool, ToolCall
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    model = Path(mistral_common.__file__).parent / "data" / "mistral_instruct_tokenizer_240323.model.v3"
    tokenizer = MistralTokenizer.from_file(str(model))
    system = None
    messages: list[Any] = []
    for m in conv["messages"]:
        if m["role"] == "system":
            system = m["content"]
        elif m["role"] == "user":
            messages.append(UserMessage(content=m["content"]))
        elif m["role"] == "tool":
            messages.append(ToolMessage(content=m["content"], tool_call_id=m.get("tool_call_id")))
        else:
            calls = [
                ToolCall(
                    id=c["id"],
                    function=FunctionCall(
                        name=c["function"]["name"], arguments=json.dumps(c["function"]["arguments"])
                    ),
                )
                for c in m.get("tool_calls", [])
            ]
            messages.append(AssistantMessage(content=m["content"] or None, tool_calls=calls or None))
    tools = [Tool(function=Function(**t["function"])) for t in conv.get("tools", [])] or None
    if generation:
        from mistral_common.protocol.instruct.messages import SystemMessage

        request = ChatCompletionRequest(
            messages=([SystemMessage(content=system)] if system else []) + messages, tools=tools
        )
        return tokenizer.encode_chat_completion(request).tokens
    instruct = InstructRequest(messages=messages, system_prompt=system, available_tools=tools)
    return tokenizer.instruct_tokenizer.encode_instruct(instruct).tokens


def _mistral_reference() -> dict[str, list[int]]:
    import os

    if os.environ.get("LMFORGE_REGEN_MISTRAL"):  # pragma: no cover - regen only
        ref = {
            f"{name}-{part}": _mistral_common_ids(
                conv if part == "full" else _prompt_part(conv), part == "prompt"
            )
            for name, conv in _mistral_cases().items()
            for part in ("prompt", "full")
        }
        MISTRAL_REFERENCE.write_text(json.dumps(ref) + "\n", encoding="utf-8")
    return json.loads(MISTRAL_REFERENCE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("part", ["prompt", "full"])
@pytest.mark.parametrize("case", BASIC + TOOLS)
def test_mistral_matches_mistral_common(case: str, part: str) -> None:
    conv = _mistral_cases()[case]
    conv = conv if part == "full" else _prompt_part(conv)
    tok = _tokenizer("mistral_v3")
    ours = get_template("mistral").encode(
        tok, Conversation.from_openai(conv), add_generation_prompt=part == "prompt"
    )
    expected = _mistral_reference()[f"{case}-{part}"]
    assert ours.input_ids == expected, (
        f"\nours:      {tok.decode(ours.input_ids)!r}\nreference: {tok.decode(expected)!r}"
    )
