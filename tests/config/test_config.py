"""The config rules: LLaMA-Factory keys parse, typos and wrong types fail with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmforge.config import build_config, load_config, parse_cli
from lmforge.config.keys import GROUP_SUMMARIES, all_keys, key_help, key_owners
from lmforge.config.legacy_training_keys import LEGACY_TRAINING_KEYS
from lmforge.errors import ConfigError

CONFIGS = Path(__file__).parents[1] / "configs"
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
    # LLaMA-Factory's PPO example: the stage is named, not the first PPO-only key in the file
    with pytest.raises(ConfigError, match="stage 'ppo'"):
        build_config({"reward_model": "saves/llama3-8b/lora/reward", "stage": "ppo"})


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


# Each rule between keys, broken once: the config stops at load with one line naming the keys.
BROKEN_RULES = [
    ({"val_size": -1}, "'val_size' must be >= 0"),
    ({"val_size": 2.5}, "'val_size' must be a fraction below 1 or a whole number"),
    ({"cutoff_len": 0}, "'cutoff_len' must be a positive number"),
    ({"max_samples": 0}, "'max_samples' must be a positive number"),
    ({"quantization_bit": 3}, "'quantization_bit' must be 4 or 8"),
    ({"ref_model_quantization_bit": 2}, "'ref_model_quantization_bit' must be 4 or 8"),
    ({"dpo_label_smoothing": 0.5}, "'dpo_label_smoothing' must be in [0, 0.5)"),
    ({"train_on_prompt": True, "mask_history": True}, "'train_on_prompt' and 'mask_history' cannot both"),
    ({"val_size": 0.1, "eval_dataset": "a"}, "'val_size' and 'eval_dataset' both choose the eval set"),
    ({"interleave_probs": "0.5,0.5"}, "'interleave_probs' needs mix_strategy interleave_under"),
    (
        {"interleave_probs": "0.5,0.5", "mix_strategy": "interleave_under", "dataset": "a,b,c"},
        "'interleave_probs' and 'dataset': 2 probabilities for 3 datasets",
    ),
    (
        {"interleave_probs": "0.5,0.4", "mix_strategy": "interleave_over", "dataset": "a,b"},
        "'interleave_probs' must sum to 1",
    ),
    ({"neat_packing": True, "packing": False}, "'neat_packing' needs packing"),
    ({"streaming": True, "packing": True}, "'streaming' and 'packing': packing needs the whole dataset"),
    ({"streaming": True, "neat_packing": True}, "'streaming' and 'neat_packing'"),
    ({"streaming": True, "val_size": 0.1}, "'streaming' and 'val_size': with streaming, val_size must be"),
    ({"stage": "dpo", "streaming": True}, "'stage' and 'streaming'"),
    ({"stage": "kto", "packing": True}, "'stage' and 'packing'"),
    (
        {"adapter_name_or_path": "adapter", "finetuning_type": "full"},
        "'adapter_name_or_path' needs finetuning_type: lora",
    ),
    ({"quantization_bit": 4, "finetuning_type": "freeze"}, "'quantization_bit' needs finetuning_type: lora"),
    ({"use_llama_pro": True}, "'use_llama_pro' needs finetuning_type: freeze"),
    ({"pissa_convert": True}, "'pissa_convert' needs pissa_init: true"),
    ({"pissa_init": True, "use_dora": True}, "'pissa_init' and 'use_dora' do not combine"),
    ({"ref_model_adapters": "adapter"}, "'ref_model_adapters' needs ref_model"),
    (
        {"use_galore": True, "use_badam": True, "finetuning_type": "full"},
        "'use_galore' and 'use_badam' each choose the optimizer; keep one",
    ),
    ({"loraplus_lr_ratio": 4, "finetuning_type": "full"}, "'loraplus_lr_ratio' needs finetuning_type: lora"),
    ({"use_apollo": True}, "'use_apollo' trains full weights; use finetuning_type: full or freeze"),
    (
        {"use_galore": True, "finetuning_type": "full", "optim": "adamw_torch"},
        "'use_galore' and 'optim' both choose the optimizer",
    ),
    ({"use_badam": True, "finetuning_type": "full", "badam_mode": "ratio"}, "'badam_mode: ratio'"),
    (
        {
            "use_galore": True,
            "finetuning_type": "full",
            "galore_layerwise": True,
            "gradient_accumulation_steps": 2,
        },
        "'galore_layerwise' and 'gradient_accumulation_steps'",
    ),
]


@pytest.mark.parametrize(
    ("values", "expected"), BROKEN_RULES, ids=lambda v: ",".join(v) if isinstance(v, dict) else ""
)
def test_a_broken_rule_stops_the_load_with_one_line(values, expected):
    with pytest.raises(ConfigError) as info:
        build_config(values)
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_rules_that_only_training_needs_wait_for_the_training_arguments():
    """A stream without max_steps is a fine config for `data preview`; training refuses it."""
    config = build_config({"streaming": True, "output_dir": "unused"})
    with pytest.raises(ConfigError, match=r"'streaming' and 'max_steps': streaming: true needs max_steps"):
        config.training_arguments()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_qlora_without_a_gpu_stops_before_the_training_arguments():
    config = build_config({"quantization_bit": 4, "output_dir": "unused"})
    with pytest.raises(ConfigError, match=r"'quantization_bit' \(QLoRA\) needs a CUDA GPU"):
        config.training_arguments()


@pytest.mark.parametrize(
    ("key", "default", "other", "expected"),
    [
        ("tool_format", None, "qwen", "each template has its own tool-call format"),
        ("buffer_size", 16384, 100, "lmforge reads a stream in file order"),
        ("eval_num_beams", None, 4, "without beam search"),
        ("ignore_pad_token_for_loss", True, False, "lmforge never trains on padding"),
        ("num_beams", 1, 4, "without beam search"),
        ("max_length", 1024, 2048, "max_new_tokens"),
        ("compute_accuracy", False, True, "eval_loss is reported"),
        ("resize_vocab", False, True, "does not support yet"),
    ],
)
def test_keys_no_code_reads_are_accepted_only_at_the_default(key, default, other, expected):
    build_config({key: default})
    build_config({key: "null" if default is None else str(default).lower()})  # as the command line gives it
    with pytest.raises(ConfigError, match=f"'{key}") as info:
        build_config({key: other})
    assert expected in str(info.value)
    assert key not in all_keys()  # no dataclass field left to read it


def test_every_key_has_a_help_text_and_a_group():
    rows = key_help()
    assert {row.group for row in rows} == set(GROUP_SUMMARIES)
    ours = [row for row in rows if row.group != "training"]
    assert {row.name for row in ours} == set(key_owners())
    assert [row.name for row in ours if not row.help] == []
    assert {row.name for row in rows} == all_keys() - set(LEGACY_TRAINING_KEYS)
