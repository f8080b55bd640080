"""Registry, readers and converters: every reader, every converter path, on small fixtures of our own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge.conversation import Conversation
from lmforge.data import check_columns, detect_format, make_converter, read_records, resolve_datasets
from lmforge.data.encoding import pt_text, sft_view
from lmforge.data.records import BadRecord

FIXTURES = Path(__file__).parents[1] / "fixtures" / "data"


def conversations(name: str, dataset_dir: Path = FIXTURES) -> list[Conversation]:
    (spec,) = resolve_datasets([name], dataset_dir)
    records = read_records(spec)
    spec = detect_format(spec, records.column_names, records.rows(range(1))[0])
    check_columns(spec, records.column_names)
    convert = make_converter(spec)
    return [convert(row) for row in records.rows(range(len(records)))]


def test_alpaca_prompt_query_history_system() -> None:
    convs = conversations("tiny_alpaca")
    assert len(convs) == 4
    first = convs[0]
    assert first.system == "You translate."
    assert [(m.role, m.content) for m in first.messages] == [
        ("user", "Translate to French.\nGood morning"),
        ("assistant", "Bonjour"),
    ]
    second = convs[1]
    assert [(m.role, m.content) for m in second.messages] == [
        ("user", "一加一等于几？"),
        ("assistant", "二。"),
        ("user", "把这句话翻译成英文。\n你好，世界"),
        ("assistant", "Hello, world"),
    ]
    assert second.system is None  # no system column value: the template's default applies
    assert convs[2].messages[0].content == "Name a colour."  # an empty input adds no newline


def test_jsonl_skips_blank_lines_and_keeps_line_numbers() -> None:
    (spec,) = resolve_datasets(["tiny_alpaca_jsonl"], FIXTURES)
    records = read_records(spec)
    assert len(records) == 6
    assert records.rows([2])[0]["instruction"] == "Say three."
    assert records.locate(2).endswith("tiny_alpaca.jsonl, record 2 (line 4)")


def test_csv_reader_with_quotes_and_chinese() -> None:
    convs = conversations("tiny_alpaca_csv")
    assert [c.messages[0].content for c in convs] == [
        "Add the numbers.\n2 and 3",
        "Quote, with a comma.",
        "中文问题",
    ]
    assert [c.messages[1].content for c in convs] == ["5", "Done, quoted.", "中文回答"]


def test_parquet_and_arrow_readers(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Q1", "input": "", "output": "A1"},
        {"instruction": "问题", "input": "x", "output": "答"},
    ]
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "d.parquet")
    with pa.OSFile(str(tmp_path / "d.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)  # the stream format `datasets` writes
    with pa.OSFile(str(tmp_path / "f.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)  # and the IPC file format
    for name in ("d.parquet", "d.arrow", "f.arrow"):
        convs = conversations(str(tmp_path / name), tmp_path)
        assert [(c.messages[0].content, c.messages[1].content) for c in convs] == [
            ("Q1", "A1"),
            ("问题\nx", "答"),
        ]


def test_txt_reader_one_text_per_line() -> None:
    convs = conversations("tiny_text")
    assert [pt_text(c) for c in convs] == [
        "The first document is short.",
        "Le deuxième document est en français.",
        "第三个文档是中文的。",
    ]


def test_folder_of_same_extension_files() -> None:
    (spec,) = resolve_datasets(["tiny_folder"], FIXTURES)
    records = read_records(spec)
    assert len(records) == 3
    assert [r["output"] for r in records.rows(range(3))] == ["A", "B", "C"]
    assert records.locate(2).endswith("part2.jsonl, record 0 (line 1)")


def test_sharegpt_roles_tools_and_function_calls() -> None:
    weather, chat = conversations("tiny_sharegpt")
    assert weather.system == "You are a weather bot."
    assert weather.tools and weather.tools[0]["name"] == "get_weather"
    roles = [m.role for m in weather.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]
    call = weather.messages[1].tool_calls[0]
    assert (call.name, call.arguments) == ("get_weather", {"city": "Paris"})
    assert weather.messages[2].content == '{"temperature": 21}'
    assert chat.system == "Answer briefly."  # the system_tag message
    assert [m.content for m in chat.messages] == ["Hi", "Hello!", "你好吗？", "很好。"]
    assert sft_view(weather) is not None and sft_view(chat) is not None


def test_openai_format_tool_calls_and_tool_role() -> None:
    terse, tooled = conversations("tiny_openai")
    assert terse.system == "Be terse."
    assert [(m.role, m.content) for m in terse.messages] == [
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
    ]
    assert [m.role for m in tooled.messages] == ["user", "assistant", "tool", "assistant"]
    call = tooled.messages[1].tool_calls[0]
    assert (call.name, call.arguments, call.id) == ("add", {"a": 2, "b": 3}, "call_1")
    assert tooled.messages[2].tool_call_id == "call_1"
    assert tooled.tools[0]["function"]["name"] == "add"
    sft_view(tooled)


def test_preference_columns_and_sft_uses_chosen() -> None:
    (conv,) = conversations("tiny_preference")
    assert conv.chosen is not None and conv.chosen.content == "An apple."
    assert conv.rejected is not None and conv.rejected.content == "A rock."
    assert [m.role for m in conv.messages] == ["user"]
    trained = sft_view(conv)
    assert [(m.role, m.content) for m in trained.messages][-1] == ("assistant", "An apple.")


def test_kto_tag_and_media_paths() -> None:
    good, bad = conversations("tiny_kto")
    assert good.kto_tag is True and bad.kto_tag is False
    assert good.images == [str(FIXTURES / "pictures" / "cat.jpg")]  # resolved under the dataset folder
    assert bad.images == ["pictures/missing.jpg"]  # left alone when not there
    sft_view(good)
    with pytest.raises(BadRecord) as info:
        sft_view(bad)
    assert "kto_tag false" in info.value.reason


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}], "roles out of order"),
        ([{"from": "human", "value": "a"}, {"from": "alien", "value": "b"}], "unknown role"),
        (
            [{"from": "human", "value": "a"}, {"from": "function_call", "value": "not json"}],
            "invalid function call",
        ),
    ],
)
def test_sharegpt_bad_records_raise_bad_record(messages: list[dict[str, str]], reason: str) -> None:
    from lmforge.data.registry import spec_from_entry

    convert = make_converter(
        spec_from_entry("x", {"file_name": "x.json", "formatting": "sharegpt"}, FIXTURES, FIXTURES)
    )
    with pytest.raises(BadRecord) as info:
        convert({"conversations": messages})
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([("user", "  ")], "empty content"),
        ([("user", "hi"), ("assistant", "")], "empty content"),
        ([("user", "hi")], "no assistant reply"),
        ([("assistant", "hi")], "roles out of order"),
        ([("user", "a"), ("user", "b"), ("assistant", "c")], "roles out of order"),
        ([("user", "a"), ("assistant", "b"), ("tool", "c"), ("assistant", "d")], "roles out of order"),
    ],
)
def test_sft_checks(messages: list[tuple[str, str]], reason: str) -> None:
    from lmforge.conversation import Message

    conv = Conversation(messages=[Message(role, content) for role, content in messages])  # type: ignore[arg-type]
    with pytest.raises(BadRecord) as info:
        sft_view(conv)
    assert info.value.reason == reason


def test_a_path_is_a_dataset_and_its_format_is_detected(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "tiny_openai.jsonl", tmp_path / "chat.jsonl")
    shutil.copy(FIXTURES / "tiny_sharegpt.json", tmp_path / "share.json")
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "plain text"}) + "\n", encoding="utf-8")
    assert conversations(str(tmp_path / "chat.jsonl"), tmp_path)[0].messages[-1].content == "Paris."
    share = conversations("share.json", tmp_path)  # relative to dataset_dir
    assert share[0].messages[1].tool_calls[0].name == "get_weather"
    assert pt_text(conversations(str(tmp_path / "docs.jsonl"), tmp_path)[0]) == "plain text"


def test_openai_formatting_default_tags_from_registry(tmp_path: Path) -> None:
    info = {"d": {"file_name": "d.json", "formatting": "openai"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    (tmp_path / "d.json").write_text(json.dumps(rows), encoding="utf-8")
    (conv,) = conversations("d", tmp_path)
    assert [(m.role, m.content) for m in conv.messages] == [("user", "q"), ("assistant", "a")]
