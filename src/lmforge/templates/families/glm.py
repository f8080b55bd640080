"""GLM (Zhipu) families after ChatGLM3 and GLM-4: CodeGeeX, GLM-4.5/4.6/4.7, GLM-4.1V/4.5V, GLM-Z1."""

from __future__ import annotations

from dataclasses import replace

from lmforge.templates.families.base import GLM4
from lmforge.templates.families.chatml import MEDIA_LATER
from lmforge.templates.template import Template

GLM_IMAGE = "<|begin_of_image|><|image|><|end_of_image|>"
GLM_VIDEO = "<|begin_of_video|><|video|><|end_of_video|>"
THINK_AS_TAGS = "thinking blocks are written as <think>"

_GLM4V = replace(
    GLM4,
    name="glm4v",
    families="GLM-4.1V-Thinking (text format)",
    stop_words=("<|user|>", "<|observation|>", "</answer>"),
    image_token=GLM_IMAGE,
    video_token=GLM_VIDEO,
    note=THINK_AS_TAGS + "; " + MEDIA_LATER,
)

TEMPLATES: list[Template] = [
    Template(
        name="chatglm2",
        families="ChatGLM2",
        prefix="[gMASK]sop",
        user="[Round {turn}]\n\n问：{content}\n\n",
        assistant_header="答：",
        assistant_end="{eos}",
        assistant_after="\n\n",
        stop_words=("</s>",),
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    Template(
        name="codegeex2",
        families="CodeGeeX2 (completion)",
        prefix="[gMASK]sop",
        assistant_end="{eos}",
        stop_words=("</s>",),
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    replace(
        GLM4,
        name="codegeex4",
        families="CodeGeeX4",
        default_system=(
            "你是一位智能编程助手，你叫CodeGeeX。你会为用户回答关于编程、代码、计算机方面的任何问题，"
            "并提供格式规范、可以执行、准确安全的代码，并在必要时提供详细的解释。"
        ),
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    replace(GLM4, name="glm4_moe", families="GLM-4.5, GLM-4.6 (text)", note=THINK_AS_TAGS),
    replace(GLM4, name="glm4_7", families="GLM-4.7", note=THINK_AS_TAGS),
    replace(GLM4, name="glmz1", families="GLM-Z1 (reasoning)", note=THINK_AS_TAGS),
    replace(
        GLM4,
        name="aeva",
        families="Aeva (GLM-4.7 based)",
        default_system=(
            "You are an AI assistant named Aeva created by Zongzhi Lou. "
            "Your answer should be friendly, unbiased, faithful, informative and detailed."
        ),
        note=THINK_AS_TAGS,
    ),
    _GLM4V,
    replace(_GLM4V, name="glm4_5v", families="GLM-4.5V (text format)"),
    replace(
        GLM4,
        name="glm_ocr",
        families="GLM-OCR (text format)",
        image_token=GLM_IMAGE,
        video_token=GLM_VIDEO,
        note=MEDIA_LATER,
    ),
]

PROVEN_AGAINST: dict[str, str] = {}
