"""Generation defaults for chat and serving (LLaMA-Factory key names)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class GeneratingArguments:
    do_sample: bool = True
    temperature: float = 0.95
    top_p: float = 0.7
    top_k: int = 50
    num_beams: int = 1
    max_length: int = 1024
    max_new_tokens: int = 1024
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    default_system: str | None = None
    skip_special_tokens: bool = True

    def to_generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate`` (max_new_tokens wins over max_length)."""
        kwargs = asdict(self)
        kwargs.pop("default_system")
        kwargs.pop("skip_special_tokens")
        if kwargs.get("max_new_tokens", -1) > 0:
            kwargs.pop("max_length")
        else:
            kwargs.pop("max_new_tokens")
        return kwargs
