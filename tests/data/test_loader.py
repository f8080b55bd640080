"""load_sft_datasets: selection, mixing, truncation, labels, the cache, tokenized_path, workers, pt, streaming, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lmforge.config.parser import build_config
from lmforge.data import load_sft_datasets
from lmforge.data.encoding import split_text, truncate
from lmforge.templates.results import IGNORE_INDEX

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


def load(qwen, stage: str = "sft", **settings):
    tokenizer, template = qwen
    values = {"dataset_dir": str(FIXTURES), "template": "qwen", **settings}
    return load_sft_datasets(build_config(values), tokenizer, template, stage)


def trained_text(tokenizer, sample) -> str:
    return tokenizer.decode(
        [t for t, label in zip(sample["input_ids"], sample["labels"], strict=True) if label != -100]
    )


def many_rows(folder: Path, n: int) -> str:
    rows = [{"instruction": f"Question number {i}?", "input": "", "output": f"Answer {i}."} for i in range(n)]
    (folder / "many.json").write_text(json.dumps(rows), encoding="utf-8")
    return str(folder / "many.json")


# ---------------------------------------------------------------- labels


def test_labels_train_replies_only_and_match_the_template(qwen, data_cache) -> None:
    tokenizer, template = qwen
    bundle = load(qwen, dataset="tiny_alpaca")
    first = bundle.train[0]
    assert set(first) == {"input_ids", "labels"}
    assert trained_text(tokenizer, first) == "Bonjour<|im_end|>"
    from lmforge.data import make_converter, read_records, resolve_datasets
    from lmforge.data.encoding import sft_view

    (spec,) = resolve_datasets(["tiny_alpaca"], FIXTURES)
    conv = sft_view(make_converter(spec)(read_records(spec).rows([0])[0]))
    assert first["input_ids"] == template.encode(tokenizer, conv).input_ids


def test_history_replies_are_trained_and_mask_history_keeps_the_last(qwen, data_cache) -> None:
    tokenizer, _ = qwen
    with_history = load(qwen, dataset="tiny_alpaca").train[1]
    assert trained_text(tokenizer, with_history) == "二。<|im_end|>Hello, world<|im_end|>"
    masked = load(qwen, dataset="tiny_alpaca", mask_history=True).train[1]
    assert trained_text(tokenizer, masked) == "Hello, world<|im_end|>"
    assert masked["input_ids"] == with_history["input_ids"]


def test_train_on_prompt_trains_every_token(qwen, data_cache) -> None:
    sample = load(qwen, dataset="tiny_alpaca", train_on_prompt=True).train[0]
    assert sample["labels"] == sample["input_ids"]


# ---------------------------------------------------------------- truncation


def test_truncate_cuts_the_end_when_the_reply_keeps_its_share() -> None:
    ids = list(range(20))
    labels = [IGNORE_INDEX] * 5 + ids[5:]
    out = truncate(ids, labels, 12)
    assert out == (ids[:12], labels[:12])


def test_truncate_cuts_the_middle_of_a_long_prompt_and_keeps_part_of_the_reply() -> None:
    ids = list(range(100))
    labels = [IGNORE_INDEX] * 90 + ids[90:]  # 90 prompt tokens, 10 reply tokens
    out_ids, out_labels = truncate(ids, labels, 16)
    assert len(out_ids) == 16
    assert out_ids[:4] == [0, 1, 2, 3]  # the prompt's start (BOS, system) survives
    assert out_ids[4:8] == [86, 87, 88, 89]  # and its end (question, assistant header)
    assert out_ids[8:] == list(range(90, 98)) and out_labels[8:] == list(range(90, 98))


def test_truncate_never_returns_a_sample_with_nothing_to_train() -> None:
    assert truncate([1, 2, 3], [IGNORE_INDEX] * 3, 2) is None
    for cutoff in (2, 3, 7):
        ids = list(range(50))
        out = truncate(ids, [IGNORE_INDEX] * 45 + ids[45:], cutoff)
        assert out is not None and len(out[0]) == cutoff
        assert any(label != IGNORE_INDEX for label in out[1][1:])


def test_split_text_keeps_every_token() -> None:
    assert split_text(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert split_text(list(range(9)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # a lone last token predicts nothing


def test_cutoff_len_in_the_loader_counts_truncated(qwen, data_cache) -> None:
    full = load(qwen, dataset="tiny_sharegpt", cutoff_len=1024)
    bundle = load(qwen, dataset="tiny_sharegpt", cutoff_len=48)
    assert all(len(ids) <= 48 for ids in bundle.train["input_ids"])
    too_long = sum(len(ids) > 48 for ids in full.train["input_ids"])
    assert too_long >= 1 and bundle.report.datasets[0].truncated == too_long
    assert all(any(label != -100 for label in labels) for labels in bundle.train["labels"])


# ---------------------------------------------------------------- selection and mixing


def test_max_samples_takes_the_first_n(qwen, data_cache) -> None:
    tokenizer, _ = qwen
    bundle = load(qwen, dataset="tiny_alpaca_jsonl", max_samples=2)
    assert [trained_text(tokenizer, s) for s in bundle.train] == ["One.<|im_end|>", "Two.<|im_end|>"]


def test_num_samples_is_a_seeded_random_subset(qwen, data_cache) -> None:
    tokenizer, _ = qwen
    replies = [trained_text(tokenizer, s) for s in load(qwen, dataset="tiny_alpaca_sampled").train]
    assert len(replies) == 3 and len(set(replies)) == 3
    again = [
        trained_text(tokenizer, s)
        for s in load(qwen, dataset="tiny_alpaca_sampled", overwrite_cache=True).train
    ]
    assert again == replies
    other_seed = {
        tuple(trained_text(tokenizer, s) for s in load(qwen, dataset="tiny_alpaca_sampled", seed=seed).train)
        for seed in (1, 2, 3, 4)
    }
    assert len(other_seed) > 1


def test_val_size_fraction_and_count(qwen, data_cache, tmp_path: Path) -> None:
    path = many_rows(tmp_path, 40)
    bundle = load(qwen, dataset=path, val_size=0.1)
    assert (len(bundle.train), len(bundle.eval)) == (36, 4)
    train_ids = {tuple(x) for x in bundle.train["input_ids"]}
    assert not train_ids & {tuple(x) for x in bundle.eval["input_ids"]}
    counted = load(qwen, dataset=path, val_size=5)
    assert (len(counted.train), len(counted.eval)) == (35, 5)
    assert (counted.report.train_samples, counted.report.eval_samples) == (35, 5)


def test_eval_dataset(qwen, data_cache) -> None:
    bundle = load(qwen, dataset="tiny_alpaca", eval_dataset="tiny_alpaca_csv")
    assert (len(bundle.train), len(bundle.eval)) == (4, 3)
    assert [d.split for d in bundle.report.datasets] == ["train", "eval"]


def test_mix_strategies(qwen, data_cache) -> None:
    tokenizer, _ = qwen
    concat = load(qwen, dataset="tiny_alpaca,tiny_alpaca_jsonl")
    assert len(concat.train) == 10
    under = load(qwen, dataset="tiny_alpaca,tiny_alpaca_jsonl", mix_strategy="interleave_under")
    over = load(qwen, dataset="tiny_alpaca,tiny_alpaca_jsonl", mix_strategy="interleave_over")
    assert len(under.train) < 10 < len(over.train)
    weighted = load(
        qwen,
        dataset="tiny_alpaca,tiny_alpaca_jsonl",
        mix_strategy="interleave_over",
        interleave_probs="0.9,0.1",
    )
    texts = [trained_text(tokenizer, s) for s in weighted.train]
    assert "Bonjour<|im_end|>" in texts and "Six.<|im_end|>" in texts


# ---------------------------------------------------------------- cache, tokenized_path, workers


def test_cache_hit_rebuild_and_invalidation(qwen, data_cache, tmp_path: Path) -> None:
    src = tmp_path / "d.jsonl"
    shutil.copy(FIXTURES / "tiny_alpaca.jsonl", src)
    first = load(qwen, dataset=str(src))
    assert first.report.datasets[0].cached is False
    second = load(qwen, dataset=str(src))
    assert second.report.datasets[0].cached is True
    assert second.train["input_ids"] == first.train["input_ids"]
    assert second.report.datasets[0].tokens == first.report.datasets[0].tokens
    assert load(qwen, dataset=str(src), overwrite_cache=True).report.datasets[0].cached is False
    assert (
        load(qwen, dataset=str(src), cutoff_len=8).report.datasets[0].cached is False
    )  # settings are in the key
    src.write_text(src.read_text() + '{"instruction": "Say seven.", "output": "Seven."}\n')
    changed = load(qwen, dataset=str(src))
    assert changed.report.datasets[0].cached is False and len(changed.train) == 7
    assert not list(data_cache.rglob("*.tmp-*"))  # no half-written entries left behind


def test_tokenized_path_saves_and_reuses(qwen, data_cache, tmp_path: Path) -> None:
    saved = tmp_path / "tokenized"
    first = load(qwen, dataset="tiny_alpaca", val_size=1, tokenized_path=str(saved))
    assert (saved / "report.json").is_file()
    again = load(qwen, dataset="does_not_matter_now", tokenized_path=str(saved))
    assert again.train["input_ids"] == first.train["input_ids"]
    assert again.eval["input_ids"] == first.eval["input_ids"]
    assert again.report.train_samples == 3


def test_workers_give_the_same_result(qwen, data_cache, tmp_path: Path) -> None:
    path = many_rows(tmp_path, 30)
    one = load(qwen, dataset=path, preprocessing_batch_size=4)
    two = load(
        qwen, dataset=path, preprocessing_batch_size=4, preprocessing_num_workers=2, overwrite_cache=True
    )
    assert two.report.datasets[0].cached is False
    assert one.train["input_ids"] == two.train["input_ids"] and one.train["labels"] == two.train["labels"]


# ---------------------------------------------------------------- pre-training and streaming


def test_pretraining_trains_every_token_and_splits_long_texts(qwen, data_cache) -> None:
    tokenizer, _ = qwen
    texts = ["The first document is short.", "Le deuxième document est en français.", "第三个文档是中文的。"]
    whole = load(qwen, "pt", dataset="tiny_text", cutoff_len=1024)
    assert [tokenizer.decode(s["input_ids"]) for s in whole.train] == [t + tokenizer.eos_token for t in texts]
    assert all(s["labels"] == s["input_ids"] for s in whole.train)
    bundle = load(qwen, "pt", dataset="tiny_text", cutoff_len=6)
    assert all(s["labels"] == s["input_ids"] for s in bundle.train)
    assert all(1 < len(s["input_ids"]) <= 6 for s in bundle.train)
    lengths = [len(s["input_ids"]) for s in whole.train]
    assert bundle.report.datasets[0].truncated == sum(n > 6 for n in lengths)
    assert bundle.report.datasets[0].tokens == sum(
        n - (n % 6 == 1) for n in lengths
    )  # only lone last tokens go


def test_streaming_yields_the_same_samples(qwen, data_cache) -> None:
    cached = load(qwen, dataset="tiny_alpaca_jsonl,tiny_sharegpt_bad")
    streamed = load(
        qwen, dataset="tiny_alpaca_jsonl,tiny_sharegpt_bad", streaming=True, preprocessing_batch_size=2
    )
    assert [s["input_ids"] for s in streamed.train] == cached.train["input_ids"]
    counted = load(qwen, dataset="tiny_alpaca_jsonl", streaming=True, val_size=2, max_samples=5)
    assert len(list(counted.eval)) == 2 and len(list(counted.train)) == 3


# ---------------------------------------------------------------- CLI


def test_cli_preview_and_stats(qwen, tmp_path: Path, capsys, data_cache) -> None:
    from lmforge.cli import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"model_name_or_path: {qwen[0].name_or_path}\ntemplate: qwen\ndataset: tiny_alpaca,tiny_sharegpt_bad\n"
        f"dataset_dir: {FIXTURES}\ncutoff_len: 1024\n"
    )
    assert main(["data", "preview", str(cfg), "--n", "2"]) == 0
    out = capsys.readouterr().out
    assert "=== train dataset 'tiny_alpaca' (alpaca, 4 records)" in out
    assert "[[Bonjour<|im_end|>]]" in out and "[[二。<|im_end|>]]" in out
    assert "--- sample 1:" in out and "--- sample 2:" not in out.split("tiny_sharegpt_bad")[0]
    assert "dropped 1 of the first 2 records: roles out of order" in out
    assert main(["data", "stats", str(cfg)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("tiny_")}
    assert rows["tiny_alpaca"][1:4] == ["train", "4", "4"]
    assert rows["tiny_sharegpt_bad"][1:4] == ["train", "6", "2"] and rows["tiny_sharegpt_bad"][-2] == "4"
    assert "2 no assistant reply" in out and "trained on:" in out


def test_a_tokenizer_change_after_loading_misses_the_cache(qwen, data_cache) -> None:
    from transformers import AutoTokenizer

    _, template = qwen
    tokenizer = AutoTokenizer.from_pretrained(qwen[0].name_or_path)  # a fresh copy to change
    config = build_config({"dataset_dir": str(FIXTURES), "template": "qwen", "dataset": "tiny_alpaca"})
    assert load_sft_datasets(config, tokenizer, template).report.datasets[0].cached is False
    assert load_sft_datasets(config, tokenizer, template).report.datasets[0].cached is True
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|lmforge_test|>"]})
    assert load_sft_datasets(config, tokenizer, template).report.datasets[0].cached is False


def test_untrained_samples_are_found_on_the_flat_arrays() -> None:
    import numpy as np

    from lmforge.data.encoding import _untrained

    # four samples: trained after position 0; trained only at position 0; empty; nothing trained
    labels = np.array([-100, 5, 7, -100, -100, -100, -100], dtype=np.int32)
    lengths = np.array([2, 2, 0, 3], dtype=np.int32)
    labels[2] = 9  # the second sample's first position: never predicted
    assert _untrained(labels, lengths).tolist() == [False, True, True, True]
    assert _untrained(np.array([], dtype=np.int32), np.array([], dtype=np.int32)).tolist() == []


def test_a_cache_entry_is_replaced_whole(tmp_path: Path) -> None:
    import datasets

    from lmforge.data.loader import read_report, write_entry

    target = tmp_path / "entry"
    first = datasets.Dataset.from_dict({"input_ids": [[1, 2]], "labels": [[-100, 2]]})
    write_entry(target, first, {"name": "a"})
    write_entry(target, first, {"name": "b"})  # replaces a complete entry
    assert read_report(target) == {"name": "b"}
    assert datasets.load_from_disk(str(target / "data"))["labels"] == [[-100, 2]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]  # no temp or old folders left
