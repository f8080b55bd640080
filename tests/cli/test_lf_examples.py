"""Every file under examples/ parses: configs through lmforge's parser, JSON as JSON; and a shipped
config naming a DeepSpeed file builds its training arguments, or (no DeepSpeed here) stops in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.config.parser import load_config
from lmforge.config.requirements import DEEPSPEED
from lmforge.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_FILES = sorted(
    p for p in (REPO_ROOT / "examples").rglob("*") if p.suffix in (".yaml", ".yml", ".json")
)


def test_examples_are_found():
    assert len(EXAMPLE_FILES) >= 10


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_example_file_parses(path: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    if path.suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
        return
    config = load_config([str(path)])
    if not config.training_kwargs.get("deepspeed"):
        return
    if DEEPSPEED.installed():
        assert config.training_arguments().deepspeed
        return
    with pytest.raises(ConfigError, match=r"lmforge\[deepspeed\]") as error:
        config.training_arguments()
    assert "\n" not in str(error.value)
