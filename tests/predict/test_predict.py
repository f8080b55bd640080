"""``do_predict``: generated predictions through the serving engine, their metrics, resuming, loss."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lmforge.cli import main

CONFIGS = Path(__file__).parents[1] / "configs"


def predict_config(path: Path, model: Path, data: Path, **settings) -> Path:
    values = {
        "model_name_or_path": str(model),
        "stage": "sft",
        "do_predict": True,
        "predict_with_generate": True,
        "eval_dataset": "identity,alpaca_en_demo",
        "dataset_dir": str(data),
        "template": "chatml",
        "cutoff_len": 256,
        "max_samples": 4,
        "max_new_tokens": 8,
        "do_sample": False,
        "infer_dtype": "float32",
        "output_dir": str(path / "out"),
        **settings,
    }
    config = path / "predict.yaml"
    config.write_text(yaml.safe_dump(values))
    return config


def lines_of(folder: Path) -> list[dict]:
    return [
        json.loads(line) for line in (folder / "generated_predictions.jsonl").read_text("utf-8").splitlines()
    ]


def records(data: Path, name: str, n: int) -> list[dict]:
    return json.loads((data / f"{name}.json").read_text("utf-8"))[:n]


# ---------------------------------------------------------------- metrics


def test_metrics_on_an_english_pair_computed_by_hand():
    from lmforge.predict.metrics import corpus_scores, words

    assert words("the cat sat on the mat") == ["the", "cat", "sat", "on", "the", "mat"]
    scores = corpus_scores([("the cat sat on the mat", "the cat is on the mat")])
    # BLEU-4: n-gram precisions 5/6, 3/5, 1/4 and 0/3 (smoothing method 3 makes it 1/(2*3)),
    # same length so no brevity penalty: (5/6 * 3/5 * 1/4 * 1/6) ** (1/4)
    assert scores["bleu-4"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25, abs=1e-4)
    # ROUGE-N counts distinct n-grams: unigrams {the cat sat on mat} vs {the cat is on mat} share 4
    # of 5; bigrams share 3 of 5; ROUGE-L: the longest common subsequence has 5 of 6 words
    assert scores["rouge-1"] == pytest.approx(80.0, abs=1e-4)
    assert scores["rouge-2"] == pytest.approx(60.0, abs=1e-4)
    assert scores["rouge-l"] == pytest.approx(100 * 5 / 6, abs=1e-4)


def test_metrics_on_a_chinese_pair_segmented_by_jieba():
    from lmforge.predict.metrics import corpus_scores, words

    assert words("我爱北京天安门") == ["我", "爱", "北京", "天安门"]  # jieba's own README example
    scores = corpus_scores([("我爱北京", "我爱北京天安门"), ("", "北京")])
    # pair 1: 3 of the reference's 4 words, in order. BLEU-4: precisions 3/3, 2/2, 1/1 and no
    # 4-gram (method 3: 1/2), brevity penalty exp(1 - 4/3). ROUGE-1 and -L: P 1, R 3/4;
    # ROUGE-2: P 1, R 2/3. Pair 2 (nothing generated) scores 0; the mean halves each score.
    bleu = math.exp(1 - 4 / 3) * 0.5**0.25
    assert scores["bleu-4"] == pytest.approx(100 * bleu / 2, abs=1e-4)
    assert scores["rouge-1"] == pytest.approx(100 * (2 * 0.75 / 1.75) / 2, abs=1e-4)
    assert scores["rouge-2"] == pytest.approx(100 * (2 * (2 / 3) / (5 / 3)) / 2, abs=1e-4)
    assert scores["rouge-l"] == scores["rouge-1"]


# ---------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def tiny_run(tiny_model, shared_data, tmp_path_factory):
    """One prediction run on the tiny model, two requests in a batch (so the engine finishes
    them out of dataset order)."""
    folder = tmp_path_factory.mktemp("predict")
    config = predict_config(folder, tiny_model("llama"), shared_data, max_concurrent_requests=2)
    assert main(["train", str(config)]) == 0
    return folder, config


def test_predict_writes_every_line_in_dataset_order(tiny_run, shared_data):
    folder, _ = tiny_run
    lines = lines_of(folder / "out")
    expected = records(shared_data, "identity", 4) + records(shared_data, "alpaca_en_demo", 4)
    assert len(lines) == 8
    for line, record in zip(lines, expected, strict=True):
        assert set(line) == {"prompt", "predict", "label"}
        assert line["label"] == record["output"]
        assert line["prompt"].startswith("user\n" + record["instruction"])  # special tokens left out
        assert line["prompt"].endswith("assistant\n")
    results = json.loads((folder / "out" / "predict_results.json").read_text())
    assert results["predict_samples"] == 8 and results["predict_engine"] == "huggingface"
    assert results["predict_samples_per_second"] > 0 and results["predict_generated_tokens"] > 0
    from lmforge.predict.metrics import corpus_scores

    recomputed = corpus_scores([(line["predict"], line["label"]) for line in lines])
    assert {k: results[f"predict_{k}"] for k in recomputed} == recomputed


def test_each_line_is_the_reply_to_its_own_prompt(tiny_run, tiny_model):
    """Line i holds what the model answers prompt i alone (greedy), not a neighbour's reply."""
    import asyncio

    from lmforge.config import load_config
    from lmforge.infer.backends import create_engine
    from lmforge.infer.prompting import PromptBuilder
    from lmforge.predict.prompts import load_prediction_samples

    folder, config_path = tiny_run
    config = load_config([str(config_path)])
    engine = create_engine(config)
    prompts = PromptBuilder.from_config(config, engine.tokenizer)
    samples = load_prediction_samples(config, prompts).samples
    options = prompts.sampling_options(config.generating)

    async def alone(indices):
        await engine.start()
        try:
            return [
                "".join([c.text async for c in engine.generate(samples[i].prompt_ids, options)])
                for i in indices
            ]
        finally:
            await engine.close()

    lines = lines_of(folder / "out")
    replies = {line["predict"] for line in lines}
    assert len(replies) > 1  # the check below could not tell lines apart otherwise
    assert asyncio.run(alone([0, 5])) == [lines[0]["predict"], lines[5]["predict"]]


def test_predict_on_smollm2(asset, shared_data, tmp_path):
    config = predict_config(
        tmp_path,
        asset("smollm2"),
        shared_data,
        eval_dataset="identity",
        max_samples=3,
        max_new_tokens=6,
    )
    assert main(["train", str(config)]) == 0
    lines = lines_of(tmp_path / "out")
    assert [line["label"] for line in lines] == [r["output"] for r in records(shared_data, "identity", 3)]
    assert all(line["predict"].strip() for line in lines)  # a real model answers something


def test_an_interrupted_run_resumes_and_keeps_its_finished_lines(tiny_run, tiny_model, shared_data, tmp_path):
    """A real child process is killed (SIGKILL) mid-run; the rerun keeps its lines, cuts a torn
    last line and answers only the rest; the file ends as an uninterrupted run's does."""
    _, config = tiny_run
    values = yaml.safe_load(config.read_text())
    values.update(output_dir=str(tmp_path / "out"))
    (tmp_path / "predict.yaml").write_text(yaml.safe_dump(values))
    target = tmp_path / "out" / "generated_predictions.jsonl"
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmforge",
            "train",
            str(tmp_path / "predict.yaml"),
            "max_concurrent_requests=1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "LMFORGE_LOG_LEVEL": "WARNING"},
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        if target.exists() and target.read_text("utf-8").count("\n") >= 2:
            break
        time.sleep(0.05)
    assert child.poll() is None, "the run ended before it could be interrupted"
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    kept = target.read_text("utf-8").splitlines(keepends=True)
    assert 2 <= len(kept) < 8
    with target.open("a", encoding="utf-8") as handle:
        handle.write('{"prompt": "torn')  # what a kill in the middle of a write leaves
    assert main(["train", str(tmp_path / "predict.yaml")]) == 0
    results = json.loads((tmp_path / "out" / "predict_results.json").read_text())
    assert results["predict_samples_resumed"] == len(kept)
    assert target.read_text("utf-8").splitlines(keepends=True)[: len(kept)] == kept
    assert lines_of(tmp_path / "out") == lines_of(tiny_run[0] / "out")


def test_a_file_written_for_other_samples_is_not_extended(tiny_run, tmp_path, capsys):
    _, config = tiny_run
    out = tmp_path / "out"
    out.mkdir()
    (out / "generated_predictions.jsonl").write_text('{"prompt": "other", "predict": "x", "label": "y"}\n')
    assert main(["train", str(config), f"output_dir={out}"]) == 2
    assert "line 1: written for another sample" in capsys.readouterr().err


def test_loss_and_perplexity_without_generation(tiny_model, shared_data, tmp_path):
    """predict_with_generate: false: the token-weighted mean loss, checked against transformers'
    own loss per sample."""
    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.config import load_config
    from lmforge.data import load_sft_datasets
    from lmforge.model.loader import load_tokenizer
    from lmforge.templates import resolve_template

    model = tiny_model("llama")
    config_path = predict_config(
        tmp_path, model, shared_data, predict_with_generate=False, eval_dataset="identity", max_samples=3,
        per_device_eval_batch_size=2,
    )  # fmt: skip
    assert main(["train", str(config_path)]) == 0
    results = json.loads((tmp_path / "out" / "predict_results.json").read_text())
    config = load_config([str(config_path)])
    tokenizer = load_tokenizer(config.model)
    encoded = load_sft_datasets(config, tokenizer, resolve_template("chatml", tokenizer)).eval
    reference = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    total = tokens = 0.0
    for sample in encoded:
        ids, labels = torch.tensor([sample["input_ids"]]), torch.tensor([sample["labels"]])
        count = int((labels[:, 1:] != -100).sum())
        total += float(reference(input_ids=ids, labels=labels).loss) * count
        tokens += count
    assert results["predict_tokens"] == tokens
    assert results["predict_loss"] == pytest.approx(total / tokens, rel=1e-4)
    assert results["predict_perplexity"] == pytest.approx(math.exp(results["predict_loss"]), rel=1e-5)


def test_llamafactory_predict_yaml_runs_with_only_the_model_swapped(
    tiny_model, shared_data, tmp_path, monkeypatch
):
    """LLaMA-Factory 0.9.2's extras/nlg_eval/llama3_lora_predict.yaml: its relative dataset_dir
    (data) and output_dir resolve in the working folder. Generation is kept short (the config
    leaves LLaMA-Factory's 1024 new tokens), and fewer samples than its 50 per dataset."""
    from tests.helpers.serving import make_lora_adapter

    model = tiny_model("llama3")
    adapter = make_lora_adapter(model, tmp_path / "adapter")
    (tmp_path / "data").symlink_to(shared_data)
    monkeypatch.chdir(tmp_path)
    code = main(["train", str(CONFIGS / "llamafactory_llama3_lora_predict.yaml"), f"model_name_or_path={model}",
                 f"adapter_name_or_path={adapter}", "max_samples=2", "max_new_tokens=4"])  # fmt: skip
    assert code == 0
    lines = lines_of(tmp_path / "saves/llama3-8b/lora/predict")
    assert [line["label"] for line in lines][2:] == [
        r["output"] for r in records(shared_data, "alpaca_en_demo", 2)
    ]
    assert lines[0]["prompt"].startswith("user\n\nhi")  # the llama3 template, special tokens left out


def test_prediction_after_training_uses_the_trained_adapter(tiny_model, shared_data, tmp_path):
    from lmforge.config import build_config
    from lmforge.predict.run import trained_config

    config = predict_config(
        tmp_path, tiny_model("llama"), shared_data, do_train=True, dataset="identity", eval_dataset="identity",
        max_samples=2, max_steps=1, learning_rate=0.05, report_to="none", max_new_tokens=4,
    )  # fmt: skip
    assert main(["train", str(config)]) == 0
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").is_file() and len(lines_of(out)) == 2
    lora = trained_config(build_config({"finetuning_type": "lora", "adapter_name_or_path": "old"}), out)
    assert lora.model.adapter_name_or_path == [str(out)]
    # the same predictions as a prediction-only run on the saved adapter
    check = tmp_path / "check"
    assert (
        main(["train", str(config), "do_train=false", f"adapter_name_or_path={out}", f"output_dir={check}"])
        == 0
    )
    assert lines_of(check) == lines_of(out)
    full = trained_config(build_config({"finetuning_type": "full", "model_name_or_path": "base"}), out)
    assert (full.model.model_name_or_path, full.model.adapter_name_or_path) == (str(out), None)
