"""Training runs on a tiny real-architecture model: outputs, output-folder rules, SIGTERM, SIGKILL + resume.

The runs use hand-encoded samples (real tokenizer, tiny model) so they test the training side
alone; tests/train/test_train_cli.py drives the same path from a YAML config and dataset files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.training import encoded_samples, settings, train

REPO_ROOT = Path(__file__).resolve().parents[2]


def main_killed_after_save(values_json: str, kill_step: int) -> None:
    """Subprocess entry: train, and SIGKILL this process right after checkpoint ``kill_step`` is saved."""
    from transformers import TrainerCallback

    class KillAfterSave(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == kill_step:
                os.kill(os.getpid(), signal.SIGKILL)

    train(json.loads(values_json), [KillAfterSave()])


def adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def llama(tiny_model: Any) -> str:
    return str(tiny_model("llama"))


def test_lora_run_writes_adapter_tokenizer_logs_plot_and_results(llama: str, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.templates import get_template

    out = tmp_path / "run"
    outcome = train(settings(llama, out, max_steps=4, plot_loss=True))
    assert outcome.exit_code == 0
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "all_results.json"):
        assert (out / name).is_file(), name
    assert (out / "training_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*")), "no temporary files are left behind"

    # the adapter loads in plain PEFT and changes the model's output
    base = AutoModelForCausalLM.from_pretrained(llama)
    ids = torch.tensor([encoded_samples(llama, 1)[0]["input_ids"]])
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama), str(out))
    assert not torch.allclose(base(ids).logits, tuned(ids).logits)

    # the saved tokenizer chats with the template we trained with
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert tokenizer.chat_template == get_template("chatml").jinja_chat_template()

    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r for r in log if "loss" in r]
    assert [r["current_steps"] for r in losses] == [1, 2, 3, 4]
    assert all(r["tokens_per_second"] > 0 for r in losses)

    results = json.loads((out / "all_results.json").read_text())
    from lmforge.train.trainer import LengthBucketSampler

    everything = encoded_samples(llama)
    drawn = list(LengthBucketSampler([len(s["input_ids"]) for s in everything], 4, seed=11))[:16]
    samples = [everything[i] for i in drawn]  # the 4 length-bucketed batches of 4 the run drew
    expected_tokens = sum(sum(1 for x in s["labels"][1:] if x != -100) for s in samples)
    assert results["trained_tokens"] == expected_tokens
    assert results["trained_samples"] == 16
    assert results["trained_tokens_per_second"] > 0 and results["train_samples_per_second"] > 0
    assert results["peak_rss_mib"] > 50


def test_logging_dir_is_where_tensorboard_writes(llama: str, tmp_path: Path, monkeypatch: Any) -> None:
    """LLaMA-Factory's logging_dir reaches transformers 5, which reads only TENSORBOARD_LOGGING_DIR."""
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "elsewhere")  # restored after the test
    train(settings(llama, tmp_path / "out", max_steps=1, save_steps=0, logging_dir=str(tmp_path / "tb")))
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "tb")


def test_full_finetuning_saves_a_whole_model_that_loads(llama: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "full"
    outcome = train(settings(llama, out, finetuning_type="full", max_steps=2, learning_rate=1e-3))
    assert outcome.metrics["chunked_loss"] is True  # tied, trainable output weights get their gradient too
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    trained = AutoModelForCausalLM.from_pretrained(str(out))
    base = AutoModelForCausalLM.from_pretrained(llama)
    changed = [n for n, p in trained.named_parameters() if not torch.equal(p, base.get_parameter(n))]
    assert "model.embed_tokens.weight" in changed and len(changed) > 10


def test_non_empty_output_dir_stops_before_any_work(llama: str, tmp_path: Path, monkeypatch: Any) -> None:
    from lmforge.errors import ConfigError

    out = tmp_path / "used"
    out.mkdir()
    (out / "notes.txt").write_text("someone's files")

    def no_work(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the tokenizer was loaded before the output folder was checked")

    monkeypatch.setattr("lmforge.model.loader.load_tokenizer", no_work)
    with pytest.raises(ConfigError, match="already exists and is not empty.*overwrite_output_dir"):
        train(settings(llama, out))
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(settings(llama, tmp_path / "fresh", resume_from_checkpoint="true"))
    with pytest.raises(ConfigError, match="not a checkpoint folder"):
        train(settings(llama, tmp_path / "fresh", resume_from_checkpoint=str(out)))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_sigterm_saves_a_checkpoint_then_stops(llama: str, tmp_path: Path) -> None:
    from transformers import TrainerCallback

    class TermAtStep3(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 2:  # arrives during step 3
                os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "term"
    outcome = train(settings(llama, out, save_steps=100), [TermAtStep3()])
    assert outcome.interrupted_by == signal.SIGTERM and outcome.exit_code == 128 + signal.SIGTERM
    assert outcome.checkpoint == str(out / "checkpoint-3")
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert (out / "checkpoint-3" / "adapter_model.safetensors").is_file()
    assert not (out / "adapter_model.safetensors").exists(), "an interrupted run writes no final model"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_sigkill_after_checkpoint_then_resume_gives_the_uninterrupted_weights(
    llama: str, tmp_path: Path
) -> None:
    whole = tmp_path / "whole"
    train(settings(llama, whole))

    broken = tmp_path / "broken"
    values = json.dumps(settings(llama, broken))
    code = f"import tests.train.test_train as t; t.main_killed_after_save({values!r}, 4)"
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    killed = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert sorted(p.name for p in broken.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (broken / "adapter_model.safetensors").exists()

    outcome = train(settings(llama, broken, resume_from_checkpoint="true"))
    assert outcome.metrics["train_runtime"] > 0
    expected, resumed = adapter_weights(whole), adapter_weights(broken)
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, resumed[name]), name
    start = adapter_weights(broken / "checkpoint-2")
    assert any(not torch.equal(start[k], expected[k]) for k in expected), "training changed the weights"
