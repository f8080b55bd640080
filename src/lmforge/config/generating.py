"""Generation defaults for chat, serving and predictions (LLaMA-Factory key names).

LLaMA-Factory's beam-search keys (``num_beams``, ``length_penalty``) and ``max_length`` are
refused unless at their defaults (config/llamafactory_keys.py): no engine here reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GeneratingArguments:
    do_sample: bool = field(
        default=True, metadata={"help": "Sample replies (temperature, top_p, top_k); false is greedy."}
    )
    temperature: float = field(
        default=0.95, metadata={"help": "Sampling temperature; lower is more focused."}
    )
    top_p: float = field(
        default=0.7, metadata={"help": "Nucleus sampling: keep the likeliest tokens up to this mass."}
    )
    top_k: int = field(default=50, metadata={"help": "Sample only among the k likeliest tokens."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Longest reply, in new tokens."})
    repetition_penalty: float = field(
        default=1.0, metadata={"help": "Above 1 makes tokens already in the text less likely (1: off)."}
    )
    default_system: str | None = field(
        default=None, metadata={"help": "System prompt used when a conversation has none."}
    )
    skip_special_tokens: bool = field(
        default=True, metadata={"help": "Leave special tokens out of the decoded reply."}
    )
