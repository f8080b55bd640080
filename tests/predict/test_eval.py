"""``lmforge eval``: the small MMLU/CMMLU-layout set in tests/fixtures/evaluation, scored by a
real GPT-2 architecture whose answer we fix.

The model's final LayerNorm has zero gain, so its output is the LayerNorm's bias whatever the
input; with the tied output embedding set so that only one letter's row points along that
bias, the model ranks that letter first for every question. The accuracy it must get is then
counted by hand from the answer columns of the fixture files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lmforge.cli import main

TASKS = Path(__file__).parents[1] / "fixtures" / "evaluation"
CONFIGS = Path(__file__).parents[1] / "configs"


def letter_model(asset, folder: Path, letter: str) -> Path:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(asset("smollm2"))
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=1024)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    letter_id = tokenizer.encode(letter, add_special_tokens=False)[-1]
    with torch.no_grad():
        final = model.transformer.ln_f
        final.weight.zero_()
        final.bias.zero_()
        final.bias[0] = 1.0
        model.transformer.wte.weight[:, 0] = 0.0
        model.transformer.wte.weight[letter_id, 0] = 1.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def always(asset, tmp_path_factory):
    made: dict[str, Path] = {}

    def get(letter: str) -> Path:
        if letter not in made:
            made[letter] = letter_model(asset, tmp_path_factory.mktemp(f"always_{letter}"), letter)
        return made[letter]

    return get


# Answer columns of tests/fixtures/evaluation/mmlu/data/test: arithmetic C A C D, world
# capitals C C B, poetry B A. A model answering C gets 2/4, 2/3 and 0/2 (4/9 in all); one
# answering A gets 1/4, 0/3 and 1/2 (2/9).
@pytest.mark.parametrize(
    ("letter", "expected"),
    [
        ("C", {"STEM": 50.0, "Social Sciences": 66.6667, "Humanities": 0.0, "Average": 44.4444}),
        ("A", {"STEM": 25.0, "Social Sciences": 0.0, "Humanities": 50.0, "Average": 22.2222}),
    ],
)
def test_eval_accuracy_matches_the_hand_count(always, tmp_path, capsys, letter, expected):
    save = tmp_path / "eval"
    code = main(
        ["eval", f"model_name_or_path={always(letter)}", "task=mmlu_test", f"task_dir={TASKS}",
         "template=fewshot", "n_shot=2", "batch_size=2", f"save_dir={save}"]
    )  # fmt: skip
    assert code == 0
    scores = json.loads((save / "scores.json").read_text())
    assert {k: v["accuracy"] for k, v in scores["categories"].items()} == expected
    assert scores["subjects"]["arithmetic"]["questions"] == 4
    predictions = json.loads((save / "results.json").read_text())  # LLaMA-Factory's file: letters per subject
    assert predictions["poetry"] == {"0": letter, "1": letter}
    assert (save / "results.log").read_text().splitlines()[0] == f"{'Average':>15}: {expected['Average']:.2f}"
    table = capsys.readouterr().out
    assert "world capitals" in table and f"{expected['Average']:.2f}" in table
    assert not list(tmp_path.glob(".eval.*"))  # the staging folder was renamed, not left behind


def test_eval_reads_the_cmmlu_layout_in_chinese(always, tmp_path):
    save = tmp_path / "zh"
    assert main(["eval", f"model_name_or_path={always('C')}", "task=cmmlu_test", f"task_dir={TASKS}",
                 "lang=zh", "n_shot=1", f"save_dir={save}"]) == 0  # fmt: skip
    scores = json.loads((save / "scores.json").read_text())
    assert scores["subjects"]["chinese_geography"] == {
        "name": "中国地理", "category": "Social Sciences", "questions": 3, "accuracy": 66.6667
    }  # fmt: skip


def test_fewshot_prompt_is_the_benchmark_format(asset):
    from transformers import AutoTokenizer

    from lmforge.predict.benchmarks import open_benchmark
    from lmforge.predict.mcq import PROMPT_STYLES, ChoiceScorer
    from lmforge.templates import resolve_template

    tokenizer = AutoTokenizer.from_pretrained(asset("smollm2"))
    scorer = ChoiceScorer(None, tokenizer, resolve_template("fewshot", tokenizer), PROMPT_STYLES["en"], 2048)
    bench = open_benchmark(str(TASKS), "mmlu")
    arithmetic = bench.subjects[0]
    dev, test = bench.questions(arithmetic, "dev"), bench.questions(arithmetic, "test")
    text = tokenizer.decode(scorer.prompt_ids(test[0], dev[:2], arithmetic))
    assert text == (
        "The following are multiple choice questions (with answers) about arithmetic.\n\n"
        "What is 1 + 1?\nA. 2\nB. 3\nC. 4\nD. 5\nAnswer:A\n\n"
        "What is 5 - 2?\nA. 1\nB. 3\nC. 2\nD. 4\nAnswer:B\n\n"
        "What is 2 + 2?\nA. 3\nB. 5\nC. 4\nD. 6\nAnswer:"
    )
    # a quoted comma stays inside its cell
    assert dev[4].question == "What is 7 + 1, in words?" and dev[4].answer == "C"
    # a context too short for the examples drops them, last first
    short = ChoiceScorer(
        None, tokenizer, scorer.template, PROMPT_STYLES["en"], len(tokenizer.encode(text)) - 1
    )
    assert tokenizer.decode(short.prompt_ids(test[0], dev[:2], arithmetic)).count("Answer:") == 2


def test_absent_task_says_where_to_put_it(tmp_path, capsys):
    code = main(["eval", "model_name_or_path=unused", "task=ceval_validation", f"task_dir={tmp_path}"])
    assert code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("lmforge eval: error: task 'ceval' not found: put its mapping.json")
    assert str(tmp_path / "ceval") in line


def test_llamafactory_eval_yaml_runs_with_only_the_model_swapped(always, tmp_path, monkeypatch, capsys):
    """LLaMA-Factory 0.9.2's train_lora/llama3_lora_eval.yaml; its relative task_dir and save_dir
    resolve in the working folder, where our small set stands in for the hub's MMLU."""
    from tests.helpers.serving import make_lora_adapter

    model = always("B")
    adapter = make_lora_adapter(model, tmp_path / "adapter", targets=("c_attn",))
    shutil.copytree(TASKS, tmp_path / "evaluation")
    monkeypatch.chdir(tmp_path)
    code = main(["eval", str(CONFIGS / "llamafactory_llama3_lora_eval.yaml"),
                 f"model_name_or_path={model}", f"adapter_name_or_path={adapter}"])  # fmt: skip
    assert code == 0, capsys.readouterr().err[-2000:]
    scores = json.loads((tmp_path / "saves/llama3-8b/lora/eval/scores.json").read_text())
    # B is never right in arithmetic (C A C D), once in world capitals (C C B) and poetry (B A): 2/9
    assert scores["categories"]["Average"] == {"questions": 9, "accuracy": 22.2222}
