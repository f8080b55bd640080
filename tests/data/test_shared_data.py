"""Every ``file_name`` entry of LLaMA-Factory's demo ``dataset_info.json`` loads unchanged.

Counts are checked against the raw files read here independently, and the first sample
of each dataset is decoded and compared with its record.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.config.parser import build_config
from lmforge.data import load_sft_datasets

PRETRAINING = {"wiki_demo", "c4_demo"}  # registered as plain text ({"prompt": "text"})


def file_entries(shared: Path) -> dict[str, dict]:
    info = json.loads((shared / "dataset_info.json").read_text(encoding="utf-8"))
    return {name: entry for name, entry in info.items() if "file_name" in entry}


def raw_rows(path: Path) -> list:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def loaded(asset, shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """Each entry encoded once with the Qwen2.5 tokenizer and template qwen."""
    from transformers import AutoTokenizer

    from lmforge.templates import get_template

    tokenizer = AutoTokenizer.from_pretrained(asset("qwen2_5"))
    template = get_template("qwen")
    mp = pytest.MonkeyPatch()
    mp.setenv("LMFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))
    bundles = {}
    try:
        for name in file_entries(shared_data):
            stage = "pt" if name in PRETRAINING else "sft"
            config = build_config({"dataset": name, "dataset_dir": str(shared_data), "cutoff_len": 8192})
            bundles[name] = load_sft_datasets(config, tokenizer, template, stage)
    finally:
        mp.undo()
    return tokenizer, bundles


def test_every_file_entry_loads(loaded, shared_data: Path) -> None:
    _, bundles = loaded
    entries = file_entries(shared_data)
    assert len(entries) >= 14 and set(bundles) == set(entries)
    for name, entry in entries.items():
        (report,) = bundles[name].report.datasets
        rows = raw_rows(shared_data / entry["file_name"])
        assert report.records == len(rows), name
        if name in PRETRAINING:
            assert report.samples >= len(rows) and not report.dropped
            assert report.trained_tokens == report.tokens
            continue
        assert report.samples + report.dropped_total == report.records, name
        assert len(bundles[name].train) == report.samples


def test_drops_are_only_the_broken_records(loaded, shared_data: Path) -> None:
    _, bundles = loaded
    entries = file_entries(shared_data)
    for name in (
        "identity",
        "alpaca_en_demo",
        "alpaca_zh_demo",
        "glaive_toolcall_en_demo",
        "dpo_en_demo",
        "mllm_demo",
    ):
        assert bundles[name].report.datasets[0].dropped == {}, name
    kto_rows = raw_rows(shared_data / entries["kto_en_demo"]["file_name"])
    undesirable = sum(1 for row in kto_rows if row["label"] is False)
    assert bundles["kto_en_demo"].report.datasets[0].dropped == {
        "undesirable reply (kto_tag false)": undesirable
    }
    zh = bundles["glaive_toolcall_zh_demo"].report.datasets[0]
    assert set(zh.dropped) <= {"roles out of order"}  # replies to tool results that were never called


def decoded(tokenizer, sample) -> tuple[str, str]:
    ids, labels = sample["input_ids"], sample["labels"]
    trained = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != -100])
    return tokenizer.decode(ids), trained


def test_first_sample_of_each_format_decodes_to_its_record(loaded, shared_data: Path) -> None:
    tokenizer, bundles = loaded
    entries = file_entries(shared_data)
    for name, entry in entries.items():
        row = raw_rows(shared_data / entry["file_name"])[0]
        text, trained = decoded(tokenizer, bundles[name].train[0])
        if name in PRETRAINING:
            first_text = row["text"] if isinstance(row, dict) else row
            assert text.startswith(first_text[:200]), name
        elif entry.get("formatting", "alpaca") == "alpaca":
            assert row["instruction"] in text and trained == row["output"] + "<|im_end|>", name
        else:
            tags = entry.get("tags", {})
            role, content = tags.get("role_tag", "from"), tags.get("content_tag", "value")
            user, assistant = tags.get("user_tag", "human"), tags.get("assistant_tag", "gpt")
            messages = row[entry["columns"]["messages"]]
            assert next(m[content] for m in messages if m[role] == user) in text, name
            if entry.get("ranking"):
                assert trained.endswith(row["chosen"][content] + "<|im_end|>"), name
                assert row["rejected"][content] not in text, name
            else:
                last_reply = [m[content] for m in messages if m[role] == assistant][-1]
                assert trained.endswith(last_reply + "<|im_end|>"), name
            assert text.startswith("<|im_start|>system\n"), name


def test_tool_calls_are_trained_in_the_templates_format(loaded) -> None:
    tokenizer, bundles = loaded
    text, trained = decoded(tokenizer, bundles["glaive_toolcall_en_demo"].train[0])
    assert "# Tools" in text and '"name": "search_recipes"' in text  # the tools column, in the system prompt
    assert '<tool_call>\n{"name": "search_recipes", "arguments": {"ingredients": ' in trained
    assert "<tool_response>" in text and "<tool_response>" not in trained  # tool results are not trained
