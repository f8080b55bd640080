"""Plain-text role markers (``Human:`` / ``Assistant:`` and kin) of earlier chat models, and
``fewshot`` for completion-style data. No special tokens: any vocabulary renders them.
"""

from __future__ import annotations

from lmforge.templates.template import Template

TEMPLATES: list[Template] = [
    Template(
        name="aquila",
        families="Aquila (chat)",
        default_system=(
            "A chat between a curious human and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the human's questions."
        ),
        system="System: {content}###",
        user="Human: {content}###",
        assistant_header="Assistant:",
        assistant_end="###",
        stop_words=("</s>", "###"),
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    Template(
        name="atom",
        families="Atom (Llama2-Chinese)",
        user="{bos}Human: {content}\n{eos}",
        assistant_header="{bos}Assistant:",
        assistant="{content}\n",
        assistant_end="{eos}",
        stop_words=("</s>",),
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    Template(
        name="belle",
        families="BELLE",
        prefix="{bos}",
        user="Human: {content}\n\n",
        assistant_header="Belle: ",
        assistant_end="{eos}",
        assistant_after="\n\n",
        stop_words=("Human:",),
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    Template(
        name="falcon",
        families="Falcon (instruct)",
        user="User: {content}\n",
        assistant_header="Falcon:",
        assistant_end="\n",
        conversation_end="{eos}",
        stop_words=("User:",),
    ),
    Template(
        name="orion",
        families="Orion-14B (chat)",
        prefix="{bos}",
        user="Human: {content}\n\n",
        assistant_header="Assistant: {eos}",
        assistant_end="{eos}",
        stop_words=("Human:",),
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    Template(
        name="solar",
        families="SOLAR 10.7B Instruct",
        system="### System:\n{content}\n\n",
        user="### User:\n{content}\n\n",
        assistant_header="### Assistant:\n",
        conversation_end="{eos}",
        stop_words=("### User:",),
    ),
    Template(
        name="xuanyuan",
        families="XuanYuan (chat)",
        default_system=(
            "以下是用户和人工智能助手之间的对话。用户以Human开头，人工智能助手以Assistant开头，"
            "会对人类提出的问题给出有帮助、高质量、详细和礼貌的回答，并且总是拒绝参与与不道德、"
            "不安全、有争议、政治敏感等相关的话题、问题和指示。\n"
        ),
        user="Human: {content} ",
        assistant_header="Assistant:",
        assistant_end="{eos}",
        stop_words=("Human:",),
    ),
    Template(
        name="xverse",
        families="XVERSE (chat)",
        user="Human: {content}\n\n",
        assistant_header="Assistant: ",
        assistant_end="{eos}",
        stop_words=("Human:",),
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    Template(
        name="ziya",
        families="Ziya-LLaMA",
        user="<human>:{content}\n",
        assistant_header="<bot>:",
        assistant_end="\n",
        conversation_end="{eos}",
        stop_words=("<human>:",),
        note="legacy: LLaMA-Factory 0.9.2 only",
    ),
    # ---- few-shot / completion data (LLaMA-Factory's `fewshot`, used by its evaluation) ----
    Template(
        name="fewshot",
        families="few-shot prompts and completion data (lmforge eval: MMLU, C-Eval, CMMLU)",
        # each solved example's answer is followed by a blank line and no end-of-sequence token,
        # so a generated answer stops there
        assistant_after="\n\n",
        stop_words=("\n\n",),
    ),
]

PROVEN_AGAINST: dict[str, str] = {}
