"""One registered dataset: where its records come from and how to read their columns.

This is the typed form of one ``dataset_info.json`` entry (LLaMA-Factory's keys and
defaults), or of a ``dataset:`` value that is a path to a file or folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Formatting = Literal["alpaca", "sharegpt", "openai"]
FORMATTINGS: tuple[str, ...] = ("alpaca", "sharegpt", "openai")


@dataclass(frozen=True)
class Columns:
    """Which record keys hold which part of a sample. ``None`` means "not used"."""

    prompt: str | None = "instruction"
    query: str | None = "input"
    response: str | None = "output"
    history: str | None = None
    messages: str | None = "conversations"
    system: str | None = None
    tools: str | None = None
    images: str | None = None
    videos: str | None = None
    audios: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    kto_tag: str | None = None


@dataclass(frozen=True)
class Tags:
    """Keys and role values of a sharegpt message list."""

    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    observation_tag: str = "observation"
    function_tag: str = "function_call"
    system_tag: str = "system"


OPENAI_TAGS = Tags(
    role_tag="role",
    content_tag="content",
    user_tag="user",
    assistant_tag="assistant",
    observation_tag="tool",
    function_tag="function_call",
    system_tag="system",
)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to read one dataset and turn its records into Conversations.

    ``source`` is ``file`` (``path`` is a file or a folder of same-extension files),
    ``hf_hub`` or ``ms_hub`` (``hub_id`` names the repository). ``explicit_columns`` lists
    the column roles the registration named itself: only those must exist in the data.
    """

    name: str
    source: Literal["file", "hf_hub", "ms_hub"] = "file"
    path: Path | None = None
    hub_id: str | None = None
    formatting: Formatting = "alpaca"
    ranking: bool = False
    columns: Columns = field(default_factory=Columns)
    explicit_columns: tuple[str, ...] = ()
    tags: Tags = field(default_factory=Tags)
    split: str = "train"
    subset: str | None = None
    folder: str | None = None
    num_samples: int | None = None
    media_dir: Path | None = None
    auto_format: bool = False  # a bare path: formatting and columns are read off the data

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change what this dataset produces (for the cache key)."""
        out = dataclasses.asdict(self)
        out["path"] = str(self.path) if self.path else None
        out["media_dir"] = str(self.media_dir) if self.media_dir else None
        return out

    def describe(self) -> str:
        """``'name' (path)`` for messages."""
        where = str(self.path) if self.path else self.hub_id
        return (
            f"dataset '{self.name}' ({where})" if where and where != self.name else f"dataset '{self.name}'"
        )
