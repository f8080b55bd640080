"""The shapes many families share (ChatML, Qwen, Llama 3), for the family modules to build on."""

from __future__ import annotations

from dataclasses import replace

from lmforge.templates.template import Template

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
GLM4_TOOLS_SYSTEM = (
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。"
)
# Qwen2-VL, LLaVA-NeXT (Qwen), MiniCPM-V and others default to this one.
HELPFUL_SYSTEM = "You are a helpful assistant."

# ChatML, the shape Qwen, Yi and many others share.
CHATML = Template(
    name="chatml",
    families="ChatML models (SmolLM2, OpenHermes, ...)",
    system="<|im_start|>system\n{content}<|im_end|>\n",
    user="<|im_start|>user\n{content}<|im_end|>\n",
    assistant_header="<|im_start|>assistant\n",
    assistant_end="<|im_end|>",
    assistant_after="\n",
    tool="<|im_start|>tool\n{content}<|im_end|>\n",
    stop_words=("<|im_end|>",),
)

QWEN = replace(
    CHATML,
    name="qwen",
    families="Qwen1.5, Qwen2, Qwen2.5 (chat/instruct, coder, math)",
    default_system=QWEN_SYSTEM,
    tool_format="qwen",
    tool_group_start="<|im_start|>user",
    tool="\n<tool_response>\n{content}\n</tool_response>",
    tool_group_end="<|im_end|>\n",
)

QWEN3 = replace(
    QWEN,
    name="qwen3",
    families="Qwen3 (hybrid thinking), QwQ",
    default_system="",
    thinking="qwen3",
    no_thinking_prefix="<think>\n\n</think>\n\n",
)

LLAMA3 = Template(
    name="llama3",
    families="Llama 3, 3.1, 3.3 (instruct)",
    prefix="<|begin_of_text|>",
    system="<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
    user="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>",
    assistant_header="<|start_header_id|>assistant<|end_header_id|>\n\n",
    assistant_end="<|eot_id|>",
    tool="<|start_header_id|>ipython<|end_header_id|>\n\n{content}<|eot_id|>",
    tool_format="llama3",
    tools_in="first_user",
    strip_content=True,
    stop_words=("<|eot_id|>", "<|eom_id|>"),
)

VICUNA = Template(
    name="vicuna",
    families="Vicuna v1.1+, base models",
    prefix="{bos}",
    default_system=VICUNA_SYSTEM,
    system="{content} ",
    user="USER: {content} ",
    assistant_header="ASSISTANT:",
    assistant=" {content}",
    assistant_end="{eos}",
    stop_words=("USER:",),
)

LLAMA2 = Template(
    name="llama2",
    families="Llama 2 (chat)",
    system_style="first_user",
    system_user_join="<<SYS>>\n{system}\n<</SYS>>\n\n{content}",
    user="{bos}[INST] {content} [/INST]",
    assistant=" {content} ",
    assistant_end="{eos}",
    strip_content=True,
    stop_words=("</s>",),
)

GLM4 = Template(
    name="glm4",
    families="GLM-4 (9B chat), GLM-4-0414",
    prefix="[gMASK]<sop>",
    system="<|system|>\n{content}",
    user="<|user|>\n{content}",
    assistant_header="<|assistant|>",
    assistant="\n{content}",
    assistant_tool_call="{content}",
    conversation_end="{eos}",
    tool="<|observation|>\n{content}",
    tool_format="glm4",
    # GLM-4 describes tools in a system block of their own, before the user's system prompt.
    system_tools_only=GLM4_TOOLS_SYSTEM + "\n\n{tools}",
    system_with_tools=GLM4_TOOLS_SYSTEM + "\n\n{tools}<|system|>\n{content}",
    stop_words=("<|user|>", "<|observation|>"),
)

MISTRAL = Template(
    name="mistral",
    families="Mistral 7B Instruct v0.3, Mixtral 8x22B and other v3-tokenizer Mistral models (instruct)",
    prefix="{bos}",
    system_style="last_user",
    user="[INST] {content}[/INST]",
    assistant=" {content}",
    assistant_tool_call="{content}",
    assistant_end="{eos}",
    tool="[TOOL_RESULTS] {content}[/TOOL_RESULTS]",
    tool_format="mistral",
    tools_in="before_last_user",
    strip_content=True,
    stop_words=("</s>",),
)

GEMMA = Template(
    name="gemma",
    families="Gemma (instruct)",
    prefix="{bos}",
    system_style="none",
    user="<start_of_turn>user\n{content}<end_of_turn>\n",
    assistant_header="<start_of_turn>model\n",
    assistant_end="<end_of_turn>",
    assistant_after="\n",
    strip_content=True,
    stop_words=("<end_of_turn>",),
)
