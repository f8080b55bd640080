"""Every chat template lmforge knows, as data. Names follow LLaMA-Factory's.

The core families are below; the others (every name LLaMA-Factory 0.9.2 registers and those its
later versions added) are lists in ``lmforge.templates.families``, grouped by family, and are
assembled here. Add a family by adding one entry; docs/templates.md lists which entries are
proven token for token against the family's official chat template.
"""

from __future__ import annotations

from dataclasses import replace

from lmforge.errors import ConfigError, did_you_mean
from lmforge.templates.families import chatml, gemma_phi, glm, labs, llama_mistral, plain
from lmforge.templates.families.base import CHATML, GEMMA, GLM4, LLAMA2, LLAMA3, MISTRAL, QWEN, QWEN3, VICUNA
from lmforge.templates.template import Template

QWEN_OMNI_SYSTEM = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
    "auditory and visual inputs, as well as generating text and speech."
)
ALPACA_SYSTEM = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
LLAMA3_DATE_HEADER = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"

# The shared shapes live in families/base.py, so that the family modules can build on them too.
_CHATML, _QWEN, _QWEN3, _LLAMA3 = CHATML, QWEN, QWEN3, LLAMA3

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        # ---- base models ----
        Template(
            name="empty",
            families="base models, plain continuation (no role markers)",
            prefix="{bos}",
            assistant_end="{eos}",
        ),
        Template(
            name="default",
            families="base models, a neutral Human/Assistant format",
            prefix="{bos}",
            system="System: {content}\n",
            user="Human: {content}\n",
            assistant_header="Assistant: ",
            assistant_end="{eos}",
            assistant_after="\n",
            tool="Tool: {content}\n",
            stop_words=("\nHuman:",),
        ),
        Template(
            name="alpaca",
            families="base models, Stanford Alpaca instruction format",
            prefix="{bos}",
            default_system=ALPACA_SYSTEM,
            user="### Instruction:\n{content}\n\n",
            assistant_header="### Response:\n",
            assistant_end="{eos}",
            assistant_after="\n\n",
            stop_words=("### Instruction:",),
        ),
        VICUNA,
        # ---- Qwen ----
        _CHATML,
        _QWEN,
        replace(
            _QWEN,
            name="qwen2_vl",
            families="Qwen2-VL, Qwen2.5-VL",
            default_system="You are a helpful assistant.",
            image_token="<|vision_start|><|image_pad|><|vision_end|>",
            video_token="<|vision_start|><|video_pad|><|vision_end|>",
        ),
        replace(
            _QWEN,
            name="qwen2_audio",
            families="Qwen2-Audio",
            default_system="You are a helpful assistant.",
            audio_token="Audio {index}: <|audio_bos|><|AUDIO|><|audio_eos|>\n",
        ),
        replace(
            _QWEN,
            name="qwen2_omni",
            families="Qwen2.5-Omni",
            default_system=QWEN_OMNI_SYSTEM,
            image_token="<|vision_bos|><|IMAGE|><|vision_eos|>",
            video_token="<|vision_bos|><|VIDEO|><|vision_eos|>",
            audio_token="<|audio_bos|><|AUDIO|><|audio_eos|>",
            note="media: pictures, video, sound (the thinker; speech output out of scope)",
        ),
        _QWEN3,
        replace(
            _QWEN3,
            name="qwen3_nothink",
            families="Qwen3 Instruct-2507 (no thinking), Qwen3 with thinking off",
            thinking="none",
            no_thinking_prefix="",
        ),
        replace(_CHATML, name="yi", families="Yi, Yi-1.5 (chat)"),
        # ---- Llama ----
        LLAMA2,
        _LLAMA3,
        replace(
            _LLAMA3,
            name="llama3_2",
            families="Llama 3.1, 3.2 (text), with the official date header in the system block",
            system="<|start_header_id|>system<|end_header_id|>\n\n{tools_header}"
            + LLAMA3_DATE_HEADER
            + "{content}<|eot_id|>",
            system_always=True,
            system_tools_header="Environment: ipython\n",
        ),
        replace(
            _LLAMA3,
            name="mllama",
            families="Llama 3.2 Vision",
            image_token="<|image|>",
        ),
        Template(
            name="llama4",
            families="Llama 4 (Scout, Maverick)",
            prefix="<|begin_of_text|>",
            system="<|header_start|>system<|header_end|>\n\n{tools_header}{content}<|eot|>",
            system_tools_header="Environment: ipython\n",
            user="<|header_start|>user<|header_end|>\n\n{content}<|eot|>",
            assistant_header="<|header_start|>assistant<|header_end|>\n\n",
            assistant_end="<|eot|>",
            tool="<|header_start|>ipython<|header_end|>\n\n{content}<|eot|>",
            tool_format="llama4",
            tools_in="first_user",
            image_token="<|image|>",
            stop_words=("<|eot|>", "<|eom|>"),
        ),
        # ---- DeepSeek ----
        Template(
            name="deepseek",
            families="DeepSeek LLM, DeepSeek-V2 (chat)",
            prefix="{bos}",
            system="{content}\n\n",
            user="User: {content}\n\n",
            assistant_header="Assistant:",
            assistant=" {content}",
            assistant_end="{eos}",
            stop_words=("User:",),
        ),
        Template(
            name="deepseek3",
            families="DeepSeek-V3, V3.1 (non-thinking)",
            prefix="{bos}",
            system="{content}",
            user="<｜User｜>{content}",
            assistant_header="<｜Assistant｜>",
            assistant_header_after_tool="",
            assistant_end="<｜end▁of▁sentence｜>",
            tool_group_start="<｜tool▁outputs▁begin｜>",
            tool="<｜tool▁output▁begin｜>{content}<｜tool▁output▁end｜>",
            tool_group_end="<｜tool▁outputs▁end｜>",
            tool_format="deepseek",
            stop_words=("<｜end▁of▁sentence｜>",),
        ),
        # ---- GLM ----
        Template(
            name="chatglm3",
            families="ChatGLM3",
            prefix="[gMASK]sop",
            system="<|system|>\n {content}",
            user="<|user|>\n {content}",
            assistant_header="<|assistant|>",
            assistant="\n {content}",
            conversation_end="{eos}",
            tool="<|observation|>\n {content}",
            stop_words=("<|user|>", "<|observation|>"),
        ),
        GLM4,
        # ---- others ----
        MISTRAL,
        GEMMA,
        Template(
            name="phi4",
            families="Phi-4",
            system="<|im_start|>system<|im_sep|>{content}<|im_end|>",
            user="<|im_start|>user<|im_sep|>{content}<|im_end|>",
            assistant_header="<|im_start|>assistant<|im_sep|>",
            assistant_end="<|im_end|>",
            stop_words=("<|im_end|>",),
        ),
        Template(
            name="zephyr",
            families="Zephyr",
            system="<|system|>\n{content}{eos}\n",
            user="<|user|>\n{content}{eos}\n",
            assistant_header="<|assistant|>\n",
            assistant_end="{eos}",
            assistant_after="\n",
            stop_words=("</s>",),
        ),
    )
}

# Entries that differ from another only in name or media tokens.
TEMPLATES["gemma2"] = replace(TEMPLATES["gemma"], name="gemma2", families="Gemma 2 (instruct)")
TEMPLATES["gemma3"] = replace(
    TEMPLATES["gemma"],
    name="gemma3",
    families="Gemma 3 (instruct, text and vision)",
    image_token="<start_of_image>",
)
TEMPLATES["deepseekr1"] = replace(
    TEMPLATES["deepseek3"],
    name="deepseekr1",
    families="DeepSeek-R1, R1 distills (Qwen/Llama based)",
    thinking="deepseekr1",
    no_thinking_prefix="<think>\n\n</think>\n\n",
)

# Templates proven token for token against an official chat template, and where it comes from
# (tests/templates/test_official.py). The others follow their family's documented format.
PROVEN_AGAINST: dict[str, str] = {
    "qwen": "Qwen2.5-Instruct tokenizer_config.json",
    "qwen3": "Qwen3 tokenizer_config.json",
    "llama3": "Meta-Llama-3-8B-Instruct tokenizer_config.json",
    "llama3_2": "Llama 3.2 tokenizer_config.json",
    "llama4": "transformers' Llama4Processor chat_template",
    "deepseek": "DeepSeek LLM tokenizer_config.json",
    "deepseek3": "DeepSeek-V3 tokenizer_config.json",
    "deepseekr1": "DeepSeek-R1 tokenizer_config.json",
    "chatglm3": "ChatGLM3 tokenizer_config.json",
    "qwen2_audio": "transformers' Qwen2AudioProcessor default chat_template",
    "gemma3": "Gemma 3 tokenizer_config.json",
    "chatml": "SmolLM2-135M-Instruct's ChatML template (conversations with a system prompt)",
    "mistral": "mistral-common 1.13.1 (v3 tokenizer), reference ids stored in tests",
}

# Family groups kept in their own modules (lmforge.templates.families.*).
FAMILY_MODULES = (chatml, llama_mistral, gemma_phi, glm, labs, plain)
for _module in FAMILY_MODULES:
    for _template in _module.TEMPLATES:
        if _template.name in TEMPLATES:
            raise RuntimeError(f"template {_template.name!r} is registered twice ({_module.__name__})")
        TEMPLATES[_template.name] = _template
    PROVEN_AGAINST.update(_module.PROVEN_AGAINST)


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
