"""The config rules: LLaMA-Factory keys parse, typos and wrong types fail with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.config import build_config, load_config, parse_cli
from lmforge.config.parser import all_keys, key_owners
from lmforge.errors import ConfigError

CONFIGS = Path(__file__).parent / "configs"
TUTORIAL = CONFIGS / "tutorial_qwen2_5_lora_sft.yaml"


def test_tutorial_config_parses_with_llamafactory_meanings():
    config = load_config([str(TUTORIAL)])
    assert config.model.model_name_or_path == "Qwen/Qwen2.5-7B-Instruct"
    assert config.model.trust_remote_code is True
    assert config.finetuning.stage == "sft"
    assert config.finetuning.finetuning_type == "lora"
    assert config.finetuning.lora_rank == 8
    assert config.finetuning.lora_target == ["all"]
    assert config.finetuning.plot_loss is True
    assert config.finetuning.overwrite_output_dir is True
    assert config.data.dataset == ["alpaca_zh_demo"]
    assert config.data.template == "qwen"
    assert config.data.cutoff_len == 2048
    assert config.data.max_samples == 1000
    assert config.data.preprocessing_num_workers == 16
    kwargs = config.training_kwargs
    assert kwargs["learning_rate"] == pytest.approx(1e-4)
    assert isinstance(kwargs["learning_rate"], float)
    assert kwargs["num_train_epochs"] == 3.0
    assert kwargs["per_device_train_batch_size"] == 1
    assert kwargs["gradient_accumulation_steps"] == 8
    assert kwargs["lr_scheduler_type"] == "cosine"
    assert kwargs["warmup_steps"] == pytest.approx(0.1)  # warmup_ratio, transformers 5 spelling
    assert kwargs["report_to"] == "none"
    assert kwargs["resume_from_checkpoint"] is None


def test_tutorial_training_arguments_build_without_gpu(monkeypatch):
    from lmforge.config import hardware

    monkeypatch.setattr(hardware, "cpu_features", lambda: {"avx512_bf16": False, "amx_bf16": False})
    args = load_config([str(TUTORIAL)]).training_arguments()
    assert args.learning_rate == pytest.approx(1e-4)
    assert args.gradient_accumulation_steps == 8
    assert args.ddp_timeout == 180000000
    assert args.bf16 is False  # no GPU, no native bf16 CPU: falls back to fp32 with a warning


def test_json_config_and_overrides(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model_name_or_path": "m", "learning_rate": "1e-4", "dataset": "a"}))
    config = load_config([str(cfg), "dataset=a,b", "--lora_rank", "16", "--learning_rate=2e-5", "--packing"])
    assert config.data.dataset == ["a", "b"]
    assert config.finetuning.lora_rank == 16
    assert config.training_kwargs["learning_rate"] == pytest.approx(2e-5)
    assert config.data.packing is True


def test_yaml_string_numbers_are_typed(tmp_path):
    # YAML reads 1e-4 (no dot) as a string; the schema makes it a float
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("learning_rate: 1e-4\nval_size: 0.1\nmax_samples: '100'\n")
    config = load_config([str(cfg)])
    assert config.training_kwargs["learning_rate"] == pytest.approx(1e-4)
    assert config.data.val_size == pytest.approx(0.1)
    assert config.data.max_samples == 100


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("do_sample", "false", False),
        ("do_sample", "True", True),
        ("lora_target", "q_proj, v_proj", ["q_proj", "v_proj"]),
        ("interleave_probs", "0.3,0.7", [0.3, 0.7]),
        ("vllm_config", '{"max_num_seqs": 4}', {"max_num_seqs": 4}),
        ("adapter_name_or_path", "null", None),
        ("report_to", "tensorboard,wandb", ["tensorboard", "wandb"]),
    ],
)
def test_value_typing(key, value, expected):
    values = {key: value}
    if key == "interleave_probs":
        values["mix_strategy"] = "interleave_under"
    config = build_config(values)
    owner = key_owners().get(key)
    got = getattr(getattr(config, owner), key) if owner else config.training_kwargs[key]
    assert got == expected


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(
        ConfigError, match=r"unknown config key 'learnig_rate' \(did you mean 'learning_rate'\?\)"
    ):
        load_config([str(CONFIGS / "typo.yaml")])


def test_unknown_key_without_close_match():
    with pytest.raises(ConfigError, match="unknown config key 'zzzz_qqq'"):
        build_config({"zzzz_qqq": 1})


def test_unsupported_llamafactory_key_is_named():
    with pytest.raises(
        ConfigError, match="'use_unsloth' is a LLaMA-Factory option lmforge does not support yet"
    ):
        build_config({"use_unsloth": True})


def test_unsupported_llamafactory_key_at_its_default_is_accepted():
    build_config({"use_unsloth": False, "use_galore": False})


def test_unsupported_stage_is_named():
    with pytest.raises(
        ConfigError, match="stage 'ppo' is a LLaMA-Factory stage lmforge does not support yet"
    ):
        build_config({"stage": "ppo"})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("lora_rank", "eight", "an integer"),
        ("learning_rate", "fast", "a number"),
        ("do_sample", "maybe", "a boolean"),
        ("finetuning_type", "qlora", "one of: lora, freeze, full"),
        ("cutoff_len", 1.5, "an integer"),
    ],
)
def test_wrong_type_names_key_value_and_type(key, value, expected):
    with pytest.raises(ConfigError) as info:
        build_config({key: value})
    message = str(info.value)
    assert f"'{key}'" in message and repr(value) in message and expected in message


def test_invalid_combinations():
    with pytest.raises(ConfigError, match="interleave_probs"):
        build_config({"interleave_probs": "0.5,0.5"})
    with pytest.raises(ConfigError, match="quantization_bit"):
        build_config({"quantization_bit": 3})
    with pytest.raises(ConfigError, match="warmup_ratio.*warmup_steps"):
        build_config({"warmup_ratio": 0.1, "warmup_steps": 10})


def test_bad_training_value_is_reported_by_transformers_check():
    config = build_config({"lr_scheduler_type": "cosin", "output_dir": "x"})
    with pytest.raises(ConfigError, match="training settings"):
        config.training_arguments()


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([str(tmp_path / "missing.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML at line \d+, column \d+"):
        load_config([str(bad)])
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"a": 1,}')
    with pytest.raises(ConfigError, match=r"bad.json: invalid JSON at line 1, column \d+"):
        load_config([str(bad_json)])
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config([str(listing)])


def test_parse_cli_rejects_stray_words():
    with pytest.raises(ConfigError, match="cannot read argument 'oops'"):
        parse_cli(["cfg.yaml", "oops"])


def test_no_key_is_owned_twice():
    from dataclasses import fields

    from transformers import Seq2SeqTrainingArguments

    ours = set(key_owners())
    theirs = {f.name for f in fields(Seq2SeqTrainingArguments)}
    # use_cache is LLaMA-Factory's model key; it wins and keeps LLaMA-Factory's meaning;
    # gradient_checkpointing is ours to take `auto` (docs/design.md), true/false as transformers means
    assert ours & theirs == {"use_cache", "gradient_checkpointing"}
    assert ours | theirs <= all_keys()


def test_server_environment_is_read_in_one_place(monkeypatch):
    from lmforge.config.environment import server_environment

    monkeypatch.setenv("API_PORT", "8123")
    monkeypatch.setenv("API_KEY", "secret")
    monkeypatch.delenv("API_HOST", raising=False)
    env = server_environment()
    assert (env.host, env.port, env.api_key) == ("127.0.0.1", 8123, "secret")
    monkeypatch.setenv("API_PORT", "eighty")
    with pytest.raises(ConfigError, match="API_PORT='eighty'"):
        server_environment()
