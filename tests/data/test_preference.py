"""Preference datasets (stages dpo, rm, kto): formats, the shared prompt, labels, truncation, drops, CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from lmforge.config.parser import build_config
from lmforge.conversation import Conversation, Message
from lmforge.data import load_sft_datasets
from lmforge.data.encoding import fit_preference
from lmforge.errors import ConfigError, DataError
from lmforge.templates.results import IGNORE_INDEX

PAIR_INFO = {
    "pairs_alpaca": {
        "file_name": "pairs_alpaca.json",
        "ranking": True,
        "columns": {
            "prompt": "instruction",
            "query": "input",
            "system": "system",
            "chosen": "chosen",
            "rejected": "rejected",
        },
    },
    "pairs_sharegpt": {
        "file_name": "pairs_sharegpt.json",
        "ranking": True,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
    },
    "plain_alpaca": {"file_name": "plain_alpaca.json"},
    "long": {
        "file_name": "long.json",
        "ranking": True,
        "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"},
    },
}
ALPACA_ROWS = [
    {
        "instruction": "Name a fruit.",
        "input": "Red, please.",
        "system": "Be brief.",
        "chosen": "An apple.",
        "rejected": "A carrot.",
    },
    {"instruction": "Say yes.", "input": "", "chosen": "Yes.", "rejected": "No way, never."},
    {"instruction": "Broken.", "input": "", "chosen": "Only one side."},  # no rejected reply: dropped
]
SHAREGPT_ROWS = [
    {
        "conversations": [
            {"from": "human", "value": "Hi!"},
            {"from": "gpt", "value": "Hello there."},
            {"from": "human", "value": "What is two plus two?"},
        ],
        "chosen": {"from": "gpt", "value": "Four."},
        "rejected": {"from": "gpt", "value": "Five, I think."},
    },
    {  # the prompt ends with a reply: dropped
        "conversations": [{"from": "human", "value": "Hi!"}, {"from": "gpt", "value": "Hello."}],
        "chosen": {"from": "gpt", "value": "A."},
        "rejected": {"from": "gpt", "value": "B."},
    },
]


@pytest.fixture(scope="module")
def qwen(asset):
    from transformers import AutoTokenizer

    from lmforge.templates import get_template

    return AutoTokenizer.from_pretrained(asset("qwen2_5")), get_template("qwen")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "dataset_info.json").write_text(json.dumps(PAIR_INFO), encoding="utf-8")
    (folder / "pairs_alpaca.json").write_text(json.dumps(ALPACA_ROWS), encoding="utf-8")
    (folder / "pairs_sharegpt.json").write_text(json.dumps(SHAREGPT_ROWS), encoding="utf-8")
    (folder / "plain_alpaca.json").write_text(
        json.dumps([{"instruction": "Hi", "output": "Hello"}]), encoding="utf-8"
    )
    return folder


def load(tokenizer, template, stage: str, **settings):
    return load_sft_datasets(build_config({"stage": stage, **settings}), tokenizer, template, stage)


def trained(tokenizer, ids: list[int], labels: list[int]) -> str:
    return tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX])


def whole(template, tokenizer, prompt: Conversation, answer: str) -> list[int]:
    conv = Conversation(messages=[*prompt.messages, Message("assistant", answer)], system=prompt.system)
    return template.encode(tokenizer, conv).input_ids


# ---------------------------------------------------------------- formats and the shared prompt


def test_alpaca_pairs_encode_as_whole_conversations(qwen, data_dir: Path) -> None:
    tokenizer, template = qwen
    bundle = load(tokenizer, template, "dpo", dataset="pairs_alpaca", dataset_dir=str(data_dir))
    assert bundle.train.column_names == [
        "chosen_input_ids",
        "chosen_labels",
        "rejected_input_ids",
        "rejected_labels",
        "prompt_length",
    ]
    report = bundle.report.datasets[0]
    assert (report.records, report.samples, report.dropped) == (3, 2, {"no chosen or rejected reply": 1})
    assert "2 pairs from 3 records" in report.summary()
    prompt = Conversation(messages=[Message("user", "Name a fruit.\nRed, please.")], system="Be brief.")
    row = bundle.train[0]
    assert row["chosen_input_ids"] == whole(template, tokenizer, prompt, "An apple.")
    assert row["rejected_input_ids"] == whole(template, tokenizer, prompt, "A carrot.")
    n = row["prompt_length"]
    assert row["chosen_input_ids"][:n] == row["rejected_input_ids"][:n]
    assert (
        row["chosen_input_ids"][:n]
        == template.encode(tokenizer, prompt, add_generation_prompt=True).input_ids
    )
    assert tokenizer.decode(row["chosen_input_ids"][:n]).endswith("<|im_start|>assistant\n")
    assert trained(tokenizer, row["chosen_input_ids"], row["chosen_labels"]) == "An apple.<|im_end|>"
    assert trained(tokenizer, row["rejected_input_ids"], row["rejected_labels"]) == "A carrot.<|im_end|>"
    assert set(row["chosen_labels"][:n]) == {IGNORE_INDEX}


def test_sharegpt_pairs_keep_history_untrained_and_train_on_prompt(qwen, data_dir: Path) -> None:
    tokenizer, template = qwen
    common = {"dataset": "pairs_sharegpt", "dataset_dir": str(data_dir)}
    bundle = load(tokenizer, template, "rm", **common)
    assert bundle.report.datasets[0].dropped == {"prompt ends with a reply": 1}
    row = bundle.train[0]
    prompt = Conversation(
        messages=[
            Message("user", "Hi!"),
            Message("assistant", "Hello there."),
            Message("user", "What is two plus two?"),
        ]
    )
    assert row["chosen_input_ids"] == whole(template, tokenizer, prompt, "Four.")
    # The earlier reply belongs to the prompt: only the answer is trained, with or without mask_history.
    assert trained(tokenizer, row["chosen_input_ids"], row["chosen_labels"]) == "Four.<|im_end|>"
    masked = load(tokenizer, template, "rm", mask_history=True, **common).train[0]
    assert masked["chosen_labels"] == row["chosen_labels"]
    everything = load(tokenizer, template, "rm", train_on_prompt=True, **common).train[0]
    assert everything["chosen_input_ids"] == row["chosen_input_ids"]
    assert everything["chosen_labels"] == everything["chosen_input_ids"]
    assert everything["rejected_labels"] == everything["rejected_input_ids"]
    with pytest.raises(ConfigError, match="train_on_prompt"):
        load(tokenizer, template, "dpo", train_on_prompt=True, mask_history=True, **common)


def test_a_tokenizer_template_shares_the_prompt_exactly(qwen, data_dir: Path) -> None:
    """With the tokenizer's own jinja template too, the prompt is a prefix of each whole encoding."""
    from lmforge.templates import resolve_template

    tokenizer = qwen[0]
    template = resolve_template(None, tokenizer)
    assert template.name == "auto"
    row = load(tokenizer, template, "dpo", dataset="pairs_sharegpt", dataset_dir=str(data_dir)).train[0]
    n = row["prompt_length"]
    text = tokenizer.decode(row["chosen_input_ids"][n:])
    assert "Four." in text and "<|im_end|>" in text
    assert "Four." in trained(tokenizer, row["chosen_input_ids"], row["chosen_labels"])
    assert row["chosen_input_ids"][:n] == row["rejected_input_ids"][:n]


def test_kto_rows_and_pairs_split_into_kto_samples(qwen, data_dir: Path) -> None:
    tokenizer, template = qwen
    bundle = load(tokenizer, template, "kto", dataset="pairs_alpaca", dataset_dir=str(data_dir))
    assert bundle.train.column_names == ["input_ids", "labels", "prompt_length", "kto_tag"]
    assert bundle.train["kto_tag"] == [True, False, True, False]
    assert bundle.report.datasets[0].desirable == 2
    first, second = bundle.train[0], bundle.train[1]
    assert first["prompt_length"] == second["prompt_length"]
    n = first["prompt_length"]
    assert first["input_ids"][:n] == second["input_ids"][:n]
    assert trained(tokenizer, second["input_ids"], second["labels"]) == "A carrot.<|im_end|>"


def test_stages_refuse_what_they_cannot_train(qwen, data_dir: Path) -> None:
    tokenizer, template = qwen
    folder = str(data_dir)
    with pytest.raises(ConfigError, match="'plain_alpaca'.*ranking: true"):
        load(tokenizer, template, "dpo", dataset="plain_alpaca", dataset_dir=folder)
    with pytest.raises(ConfigError, match="streaming"):
        load(tokenizer, template, "dpo", dataset="pairs_alpaca", dataset_dir=folder, streaming=True)
    with pytest.raises(ConfigError, match="packing"):
        load(tokenizer, template, "kto", dataset="pairs_alpaca", dataset_dir=folder, packing=True)
    info = {**PAIR_INFO, "no_columns": {"file_name": "pairs_alpaca.json", "ranking": True}}
    (data_dir / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(ConfigError, match="'no_columns'.*chosen"):
        load(tokenizer, template, "rm", dataset="no_columns", dataset_dir=folder)


def test_strict_stops_at_the_first_unusable_pair(qwen, data_dir: Path) -> None:
    tokenizer, template = qwen
    with pytest.raises(
        DataError, match=r"pairs_alpaca.json.*2.*no chosen or rejected reply.*no rejected reply"
    ):
        load(tokenizer, template, "dpo", dataset="pairs_alpaca", dataset_dir=str(data_dir), strict=True)


def test_a_bare_file_with_chosen_and_rejected_is_a_ranking_dataset(qwen, data_dir: Path) -> None:
    tokenizer, template = qwen
    path = data_dir / "pairs_sharegpt.json"
    bundle = load(tokenizer, template, "dpo", dataset=str(path), dataset_dir=str(data_dir))
    assert bundle.report.datasets[0].samples == 1


def test_the_cache_key_holds_the_stage(qwen, data_dir: Path) -> None:
    tokenizer, template = qwen
    common = {"dataset": "pairs_alpaca", "dataset_dir": str(data_dir)}
    assert load(tokenizer, template, "dpo", **common).report.datasets[0].cached is False
    assert load(tokenizer, template, "dpo", **common).report.datasets[0].cached is True
    rm = load(tokenizer, template, "rm", **common)
    assert rm.report.datasets[0].cached is False
    kto = load(tokenizer, template, "kto", **common)
    assert kto.report.datasets[0].cached is False and "kto_tag" in kto.train.column_names


# ---------------------------------------------------------------- truncation


def test_fit_preference_rules() -> None:
    assert fit_preference(10, 5, 3, 20) == (10, 5)  # fits: untouched
    assert fit_preference(30, 5, 3, 20) == (15, 5)  # the prompt gives way, the answers stay whole
    assert fit_preference(30, 40, 3, 20) == (10, 10)  # both long: the prompt keeps half
    assert fit_preference(4, 40, 3, 20) == (4, 16)  # a short prompt stays, the answers are cut
    assert fit_preference(30, 40, 12, 20) == (12, 8)  # the protected header is never cut
    assert fit_preference(30, 5, 20, 20) is None  # not even the header and one answer token fit


def long_pairs(folder: Path, user: str, chosen: str, rejected: str) -> None:
    rows = [{"instruction": user, "chosen": chosen, "rejected": rejected}]
    (folder / "long.json").write_text(json.dumps(rows), encoding="utf-8")


def test_a_long_prompt_loses_its_start_and_keeps_its_header(qwen, data_dir: Path) -> None:
    tokenizer, template = qwen
    user = " ".join(f"word{i}" for i in range(200))
    long_pairs(data_dir, user, "Short.", "A somewhat longer rejected answer.")
    common = {"dataset": "long", "dataset_dir": str(data_dir)}
    full = load(tokenizer, template, "dpo", cutoff_len=4096, **common).train[0]
    cut_bundle = load(tokenizer, template, "dpo", cutoff_len=64, **common)
    assert cut_bundle.report.datasets[0].truncated == 1
    cut = cut_bundle.train[0]
    n, full_n = cut["prompt_length"], full["prompt_length"]
    longer = max(len(cut["chosen_input_ids"]), len(cut["rejected_input_ids"]))
    assert longer <= 64 and n < full_n
    for side in ("chosen", "rejected"):
        ids, labels = cut[f"{side}_input_ids"], cut[f"{side}_labels"]
        assert ids[:n] == full[f"{side}_input_ids"][full_n - n : full_n]  # the prompt's end, kept whole
        assert ids[n:] == full[f"{side}_input_ids"][full_n:]  # the answer, whole
        assert trained(tokenizer, ids, labels).endswith("<|im_end|>")
    prompt_text = tokenizer.decode(cut["chosen_input_ids"][:n])
    assert prompt_text.endswith("word199<|im_end|>\n<|im_start|>assistant\n")
    assert "word0 " not in prompt_text


def test_long_answers_are_cut_and_unfit_pairs_dropped(qwen, data_dir: Path) -> None:
    tokenizer, template = qwen
    answer = " ".join(f"token{i}" for i in range(100))
    long_pairs(data_dir, "Write a lot.", answer, "No.")
    common = {"dataset": "long", "dataset_dir": str(data_dir)}
    bundle = load(tokenizer, template, "dpo", cutoff_len=32, **common)
    row = bundle.train[0]
    assert len(row["chosen_input_ids"]) == 32
    assert tokenizer.decode(row["chosen_input_ids"][: row["prompt_length"]]).endswith(
        "<|im_start|>assistant\n"
    )
    assert not trained(tokenizer, row["chosen_input_ids"], row["chosen_labels"]).endswith("<|im_end|>")
    assert trained(tokenizer, row["rejected_input_ids"], row["rejected_labels"]) == "No.<|im_end|>"
    rows = [
        {"instruction": "Short.", "chosen": "Yes.", "rejected": "No."},
        {"instruction": "Hi.", "chosen": "A"},
    ]
    (data_dir / "long.json").write_text(json.dumps(rows), encoding="utf-8")
    # cutoff_len 3 holds the assistant header and nothing of an answer: the pair is dropped and counted.
    with pytest.raises(DataError, match="2 records .*1 prompt header does not fit cutoff_len"):
        load(tokenizer, template, "dpo", cutoff_len=3, **common)
    kept = load(tokenizer, template, "dpo", cutoff_len=4, **common).train[0]
    assert len(kept["chosen_input_ids"]) == 4 and kept["prompt_length"] == 3  # header + one answer token


def test_bos_stays_when_the_prompt_is_cut(asset, data_dir: Path) -> None:
    from transformers import AutoTokenizer

    from lmforge.templates import get_template

    tokenizer, template = AutoTokenizer.from_pretrained(asset("llama3")), get_template("llama3")
    long_pairs(data_dir, " ".join(f"w{i}" for i in range(150)), "Yes.", "No.")
    row = load(tokenizer, template, "dpo", dataset="long", dataset_dir=str(data_dir), cutoff_len=48).train[0]
    ids = row["chosen_input_ids"]
    assert len(ids) <= 48 and ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1
    head = tokenizer.decode(ids[: row["prompt_length"]])
    assert head.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert trained(tokenizer, ids, row["chosen_labels"]) == "Yes.<|eot_id|>"


# ---------------------------------------------------------------- LLaMA-Factory's demo data


def raw_prompt(messages: list[dict], role_key: str, content_key: str) -> Conversation:
    roles = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
    system = None
    if messages[0][role_key] == "system":
        system, messages = messages[0][content_key], messages[1:]
    return Conversation([Message(roles[m[role_key]], m[content_key]) for m in messages], system=system)


@pytest.mark.parametrize(
    ("name", "stage"), [("dpo_en_demo", "dpo"), ("dpo_zh_demo", "rm"), ("kto_en_demo", "kto")]
)
def test_demo_data_encodes_as_its_records_say(
    qwen, shared_data: Path, name: str, stage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each kept row equals the template's encoding of its record, read here independently."""
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    tokenizer, template = qwen
    n, cutoff = 40, 768
    raw = json.loads((shared_data / f"{name}.json").read_text(encoding="utf-8"))[:n]
    bundle = load(
        tokenizer,
        template,
        stage,
        dataset=name,
        dataset_dir=str(shared_data),
        cutoff_len=cutoff,
        max_samples=n,
    )
    report = bundle.report.datasets[0]
    assert report.records == n and report.samples == n and not report.dropped
    truncated = 0
    for record, row in zip(raw, bundle.train, strict=True):
        n_prompt = row["prompt_length"]
        if stage == "kto":
            prompt = raw_prompt(record["messages"], "role", "content")
            answers = {"": prompt.messages.pop().content}
            assert row["kto_tag"] is record["label"]
        else:
            prompt = raw_prompt(record["conversations"], "from", "value")
            answers = {"chosen_": record["chosen"]["value"], "rejected_": record["rejected"]["value"]}
            assert row["chosen_input_ids"][:n_prompt] == row["rejected_input_ids"][:n_prompt]
        lengths = [len(row[f"{side}input_ids"]) for side in answers]
        assert max(lengths) <= cutoff
        expected = {side: whole(template, tokenizer, prompt, answer) for side, answer in answers.items()}
        fits = max(map(len, expected.values())) <= cutoff
        truncated += not fits
        for side, answer in answers.items():
            ids, labels = row[f"{side}input_ids"], row[f"{side}labels"]
            assert set(labels[:n_prompt]) == {IGNORE_INDEX}
            if fits:
                assert ids == expected[side]
                assert trained(tokenizer, ids, labels) == answer + "<|im_end|>"
            else:  # the prompt ends with the header, the answer is the record's or a start of it
                assert tokenizer.decode(ids[:n_prompt]).endswith("<|im_start|>assistant\n")
                assert ids[n_prompt:] == expected[side][-(len(ids) - n_prompt) :] or answer.startswith(
                    tokenizer.decode(ids[n_prompt:])
                )
    assert report.truncated == truncated
    if stage == "kto":
        assert report.desirable == sum(1 for record in raw if record["label"])


# ---------------------------------------------------------------- preview and stats


def cli_config(data_dir: Path, stage: str, **extra):
    from lmforge.config.parser import build_config

    return build_config(
        {"stage": stage, "template": "qwen", "dataset": "pairs_alpaca", "dataset_dir": str(data_dir), **extra}
    )


def test_preview_shows_the_prompt_then_both_answers(qwen, data_dir: Path) -> None:
    from lmforge.cli.data import preview

    tokenizer, template = qwen
    out = io.StringIO()
    preview(cli_config(data_dir, "dpo"), tokenizer, template, 5, out)
    text = out.getvalue()
    assert "--- pair 0: prompt" in text and "--- pair 1:" in text
    first = text.split("--- pair 0:")[1].split("--- pair 1:")[0]
    assert "Name a fruit.\nRed, please.<|im_end|>\n<|im_start|>assistant\n" in first
    assert first.index(">>> chosen:\n[[An apple.<|im_end|>]]") < first.index(
        ">>> rejected:\n[[A carrot.<|im_end|>]]"
    )
    assert "dropped 1 of the first 3 records: no chosen or rejected reply" in text
    out = io.StringIO()
    preview(cli_config(data_dir, "kto"), tokenizer, template, 1, out)
    assert "--- sample 0 (desirable)" in out.getvalue() and "--- sample 1 (undesirable)" in out.getvalue()


def test_stats_report_prompt_and_answer_lengths(qwen, data_dir: Path) -> None:
    from lmforge.cli.data import stats

    tokenizer, template = qwen
    out = io.StringIO()
    stats(cli_config(data_dir, "dpo"), tokenizer, template, out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "stage dpo, cutoff_len 2048"
    assert lines[1].startswith("pairs_alpaca (train): 3 records, 2 pairs, 0 truncated, 1 dropped")
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:6]}
    no = len(tokenizer("No way, never.")["input_ids"])
    assert int(rows["rejected"][3]) == no + 2  # the longest rejected answer, with <|im_end|> and its newline
    assert set(rows) == {"prompt", "chosen", "rejected"}
    assert "pairs_alpaca: 1 no chosen or rejected reply" in out.getvalue()


# ---------------------------------------------------------------- media


def test_image_pairs_expand_like_sft_and_keep_their_media(tiny_model, tmp_path: Path, monkeypatch) -> None:
    """A ranking set with images (tiny Qwen2-VL): the chosen side is exactly SFT's sample of the record."""
    from transformers import AutoConfig, AutoTokenizer

    from lmforge.media.models import media_processing_for
    from lmforge.templates import get_template
    from tests.helpers.media import png

    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "red.png").write_bytes(png((220, 30, 30), (90, 60)))
    rows = [
        {
            "conversations": [{"from": "human", "value": "<image>What colour is this?"}],
            "chosen": {"from": "gpt", "value": "Red."},
            "rejected": {"from": "gpt", "value": "It is green."},
            "images": ["pics/red.png"],
        }
    ]
    (tmp_path / "pairs.json").write_text(json.dumps(rows), encoding="utf-8")
    columns = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "images": "images"}
    info = {
        "pic_pairs": {
            "file_name": "pairs.json",
            "ranking": True,
            "formatting": "sharegpt",
            "columns": columns,
        }
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    model = tiny_model("qwen2_vl")
    config = build_config({"template": "qwen2_vl", "dataset": "pic_pairs", "dataset_dir": str(tmp_path)})
    tokenizer, template = AutoTokenizer.from_pretrained(model), get_template("qwen2_vl")
    media = media_processing_for(AutoConfig.from_pretrained(model), model, config.model)
    pairs = load_sft_datasets(config, tokenizer, template, "dpo", media=media).train
    sft = load_sft_datasets(config, tokenizer, template, "sft", media=media).train
    row = pairs[0]
    assert row["media"] == sft[0]["media"] == [f"image:{tmp_path / 'pics' / 'red.png'}"]
    assert row["chosen_input_ids"] == sft[0]["input_ids"]
    n = row["prompt_length"]
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert row["chosen_input_ids"][:n] == row["rejected_input_ids"][:n]
    assert row["chosen_input_ids"][:n].count(pad) > 1  # expanded to the processor's count
    assert trained(tokenizer, row["rejected_input_ids"], row["rejected_labels"]) == "It is green.<|im_end|>"
