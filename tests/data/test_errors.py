"""Every data error the user can fix: one line that names the file, record or key, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lmforge.config.parser import build_config
from lmforge.data import load_sft_datasets, read_records, resolve_datasets
from lmforge.errors import DataError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "data"


@pytest.fixture(scope="module")
def qwen(asset):
    from transformers import AutoTokenizer

    from lmforge.templates import get_template

    return AutoTokenizer.from_pretrained(asset("qwen2_5")), get_template("qwen")


@pytest.fixture
def data_cache(qwen, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_info(folder: Path, info: dict) -> None:
    (folder / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")


def load(folder: Path, qwen, **settings):
    tokenizer, template = qwen
    config = build_config({"dataset_dir": str(folder), "template": "qwen", **settings})
    return load_sft_datasets(config, tokenizer, template, "sft")


def test_malformed_json_names_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(
        '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c" "output": "d"}\n]'
    )
    write_info(tmp_path, {"bad": {"file_name": "bad.json"}})
    (spec,) = resolve_datasets(["bad"], tmp_path)
    with pytest.raises(DataError, match=r"bad\.json: invalid JSON at line 3, column 23"):
        read_records(spec)


def test_malformed_jsonl_names_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text(
        '{"instruction": "a", "output": "b"}\n\n{"instruction": "c", "output": }\n'
    )
    (spec,) = resolve_datasets([str(tmp_path / "bad.jsonl")], tmp_path)
    with pytest.raises(DataError, match=r"bad\.jsonl: invalid JSON at line 3, column 32"):
        read_records(spec)


def test_missing_column_names_dataset_column_and_columns_with_did_you_mean(
    tmp_path: Path, qwen, data_cache
) -> None:
    shutil.copy(FIXTURES / "tiny_alpaca.jsonl", tmp_path / "d.jsonl")
    write_info(
        tmp_path, {"d": {"file_name": "d.jsonl", "columns": {"prompt": "instuction", "response": "output"}}}
    )
    with pytest.raises(DataError) as info:
        load(tmp_path, qwen, dataset="d")
    message = str(info.value)
    assert "dataset 'd'" in message and "columns.prompt names column 'instuction'" in message
    assert "did you mean 'instruction'?" in message
    assert "instruction, input, output" in message  # the columns that exist


def test_sharegpt_bad_records_are_dropped_and_counted(qwen, data_cache, caplog) -> None:
    bundle = load(FIXTURES, qwen, dataset="tiny_sharegpt_bad")
    (report,) = bundle.report.datasets
    assert report.records == 6 and report.samples == 2 and len(bundle.train) == 2
    assert report.dropped == {"roles out of order": 1, "empty content": 1, "no assistant reply": 2}
    assert "tiny_sharegpt_bad.json, record 1" in report.first_dropped["roles out of order"]
    assert "record 3" in report.first_dropped["no assistant reply"]
    assert any("dropped 4 records" in r.getMessage() for r in caplog.records)  # the run says so


def test_strict_turns_the_first_bad_record_into_an_error(qwen, data_cache) -> None:
    with pytest.raises(DataError) as info:
        load(FIXTURES, qwen, dataset="tiny_sharegpt_bad", strict=True)
    message = str(info.value)
    assert "dataset 'tiny_sharegpt_bad'" in message and "tiny_sharegpt_bad.json, record 1" in message
    assert "roles out of order" in message and "strict: false" in message


def test_empty_file(tmp_path: Path) -> None:
    for name, text in (("e.json", ""), ("w.jsonl", "\n  \n"), ("e.csv", ""), ("a.json", "[]")):
        (tmp_path / name).write_text(text)
        (spec,) = resolve_datasets([str(tmp_path / name)], tmp_path)
        with pytest.raises(DataError, match=rf"{name}.*(is empty|has no records)"):
            read_records(spec)


def test_missing_file_names_the_path_tried(tmp_path: Path) -> None:
    write_info(tmp_path, {"gone": {"file_name": "not_here.json"}})
    (spec,) = resolve_datasets(["gone"], tmp_path)
    with pytest.raises(DataError, match=rf"file not found: {tmp_path / 'not_here.json'}"):
        read_records(spec)


def test_unknown_dataset_lists_names_with_did_you_mean() -> None:
    with pytest.raises(DataError) as info:
        resolve_datasets(["tiny_alpacca"], FIXTURES)
    message = str(info.value)
    assert "dataset 'tiny_alpacca' is not registered" in message and "did you mean 'tiny_alpaca'?" in message
    assert "tiny_sharegpt" in message  # the names that exist


def test_unsupported_extension(tmp_path: Path) -> None:
    (tmp_path / "data.xml").write_text("<data/>")
    (spec,) = resolve_datasets([str(tmp_path / "data.xml")], tmp_path)
    with pytest.raises(DataError, match=r"unsupported file type '\.xml'.*use one of \.json"):
        read_records(spec)


def test_dataset_info_that_is_not_valid_json(tmp_path: Path) -> None:
    (tmp_path / "dataset_info.json").write_text('{"a": {"file_name": "a.json",}}')
    with pytest.raises(DataError, match=r"dataset_info\.json: invalid JSON at line 1, column 30"):
        resolve_datasets(["a"], tmp_path)


def test_dataset_info_unknown_keys_are_named(tmp_path: Path) -> None:
    write_info(tmp_path, {"a": {"file_name": "a.json", "colums": {}}})
    with pytest.raises(DataError, match=r"dataset 'a': unknown key 'colums' \(did you mean 'columns'\?\)"):
        resolve_datasets(["a"], tmp_path)
    write_info(tmp_path, {"a": {"file_name": "a.json", "columns": {"promt": "q"}}})
    with pytest.raises(DataError, match=r"unknown columns key 'promt' \(did you mean 'prompt'\?\)"):
        resolve_datasets(["a"], tmp_path)


def test_hub_dataset_offline_says_so(qwen, data_cache) -> None:
    with pytest.raises(DataError) as info:
        load(FIXTURES, qwen, dataset="on_the_hub")
    message = str(info.value)
    assert "someone/some-dataset" in message and "HF_HUB_OFFLINE" in message and "file_name" in message


def test_folder_mixing_file_types(tmp_path: Path) -> None:
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.json").write_text("[]")
    (tmp_path / "mixed" / "b.csv").write_text("a\n1\n")
    (spec,) = resolve_datasets([str(tmp_path / "mixed")], tmp_path)
    with pytest.raises(DataError, match=r"mixes file types \(\.csv, \.json\)"):
        read_records(spec)


def test_every_record_dropped_is_an_error_naming_why(tmp_path: Path, qwen, data_cache) -> None:
    rows = [{"conversations": [{"from": "human", "value": "only a question"}]}]
    (tmp_path / "q.json").write_text(json.dumps(rows))
    write_info(tmp_path, {"q": {"file_name": "q.json", "formatting": "sharegpt"}})
    with pytest.raises(
        DataError, match=r"no sample is left of 1 records: 1 records \(1 no assistant reply\)"
    ):
        load(tmp_path, qwen, dataset="q")


def test_cli_prints_one_line_and_exits_2(tmp_path: Path, qwen, capsys, data_cache) -> None:
    from lmforge.cli import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"model_name_or_path: {qwen[0].name_or_path}\ntemplate: qwen\ndataset: tiny_alpacca\ndataset_dir: {FIXTURES}\n"
    )
    assert main(["data", "stats", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tiny_alpacca" in err[0] and "Traceback" not in err[0]


def test_data_command_usage_and_bad_options(tmp_path: Path, capsys) -> None:
    from lmforge.cli import main

    assert main(["data"]) == 2 and "lmforge data preview" in capsys.readouterr().out
    assert main(["data", "--help"]) == 0
    assert main(["data", "show", "cfg.yaml"]) == 2
    assert "unknown data command 'show'" in capsys.readouterr().err
    assert main(["data", "preview", "cfg.yaml", "--n", "zero"]) == 2
    assert "--n must be a positive whole number, got 'zero'" in capsys.readouterr().err
