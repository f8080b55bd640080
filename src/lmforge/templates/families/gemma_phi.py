"""Google (Gemma 3n, Gemma 4, PaliGemma) and Microsoft (Phi-3, Phi-4-mini) families."""

from __future__ import annotations

from dataclasses import replace

from lmforge.templates.families.base import GEMMA, HELPFUL_SYSTEM
from lmforge.templates.families.chatml import MEDIA_LATER
from lmforge.templates.template import Template

# Gemma 4 turns: <|turn>role ... <turn|>; the system turn carries the <|think|> switch.
_GEMMA4 = Template(
    name="gemma4",
    families="Gemma 4 (text format)",
    prefix="{bos}",
    default_system=HELPFUL_SYSTEM,
    system="<|turn>system\n<|think|>{content}<turn|>\n",
    user="<|turn>user\n{content}<turn|>\n",
    assistant_header="<|turn>model\n",
    assistant_end="<turn|>",
    assistant_after="\n",
    tool="<|turn>tool\n{content}<turn|>\n",
    stop_words=("<turn|>",),
    image_token="<|image|>",
    video_token="<|video|>",
    note="thinking channel (<|channel>thought) and Gemma 4 tool syntax are not rendered; " + MEDIA_LATER,
)

# Phi-3 / Phi-3.5: <|role|>\n ... <|end|>\n
_PHI = Template(
    name="phi",
    families="Phi-3, Phi-3.5 (mini, medium)",
    system="<|system|>\n{content}<|end|>\n",
    user="<|user|>\n{content}<|end|>\n",
    assistant_header="<|assistant|>\n",
    assistant_end="<|end|>",
    assistant_after="\n",
    stop_words=("<|end|>",),
)

TEMPLATES: list[Template] = [
    replace(
        GEMMA,
        name="gemma3n",
        families="Gemma 3n (text format)",
        image_token="<image_soft_token>",
        audio_token="<audio_soft_token>",
        note=MEDIA_LATER,
    ),
    _GEMMA4,
    replace(_GEMMA4, name="gemma4n", families="Gemma 4n (text format)", audio_token="<|audio|>"),
    Template(
        name="paligemma",
        families="PaliGemma, PaliGemma 2 (pt/mix, prompt + answer)",
        prefix="{bos}",
        system_style="none",
        user="{content}\n",
        assistant_end="{eos}",
        stop_words=("<eos>",),
        image_token="<image>",
        note=MEDIA_LATER,
    ),
    replace(
        GEMMA,
        name="paligemma_chat",
        families="PaliGemma fine-tuned for Gemma-style chat (text format)",
        image_token="<image>",
        note=MEDIA_LATER,
    ),
    _PHI,
    replace(_PHI, name="phi_small", families="Phi-3-small", prefix="<|endoftext|>"),
    Template(
        name="phi4_mini",
        families="Phi-4-mini (instruct, reasoning)",
        system="<|system|>{content}<|end|>",
        user="<|user|>{content}<|end|>",
        assistant_header="<|assistant|>",
        assistant_end="<|end|>",
        system_with_tools="{content}<|tool|>{tools}<|/tool|>",
        system_tools_only="<|tool|>{tools}<|/tool|>",
        stop_words=("<|end|>",),
        note="tool definitions sit in <|tool|> ... <|/tool|> in the neutral wording",
    ),
]

PROVEN_AGAINST: dict[str, str] = {}
