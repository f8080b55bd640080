"""The data stage calls the fast tokenizer's Rust backend directly; it must give what the wrapper gives."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lmforge.conversation import Conversation, Message
from lmforge.templates import get_template
from lmforge.templates import tokens as tokens_module

CASES = [("qwen2_5", "qwen"), ("llama3", "llama3"), ("chatglm3", "chatglm3"), ("smollm2", "chatml")]


def conversations() -> list[Conversation]:
    return [
        Conversation(messages=[Message("user", "Hello <|im_end|> there"), Message("assistant", "Hi!")]),
        Conversation(
            messages=[
                Message("user", "你好，请介绍一下你自己。"),
                Message("assistant", "我是一个助手。"),
                Message("user", "  leading and trailing spaces  "),
                Message("assistant", " ok \n"),
            ],
            system="Be brief.",
        ),
    ]


def encode_both(tokenizer, template_name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list]:
    template = get_template(template_name)
    direct = template.encode_batch(tokenizer, conversations(), mask_history=False)
    with monkeypatch.context() as patch:
        patch.setattr(tokens_module, "_plain_backend", lambda tokenizer: None)
        wrapped = template.encode_batch(tokenizer, conversations(), mask_history=False)
    return direct, wrapped


@pytest.mark.parametrize(("name", "template_name"), CASES)
def test_direct_backend_equals_the_wrapper(
    asset: Callable[[str], Path], name: str, template_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(asset(name), trust_remote_code=True)
    assert tokens_module._plain_backend(tokenizer) is not None or not tokenizer.is_fast
    direct, wrapped = encode_both(tokenizer, template_name, monkeypatch)
    assert [(s.input_ids, s.labels) for s in direct] == [(s.input_ids, s.labels) for s in wrapped]
    assert any(label != -100 for s in direct for label in s.labels)


def test_backend_with_its_own_truncation_or_split_special_tokens_goes_through_the_wrapper(
    asset: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(asset("qwen2_5"))
    tokenizer._tokenizer.enable_truncation(max_length=4)
    assert tokens_module._plain_backend(tokenizer) is None
    direct, wrapped = encode_both(tokenizer, "qwen", monkeypatch)
    assert len(direct[1].input_ids) > 4, "the backend's own truncation must not apply"
    assert [s.input_ids for s in direct] == [s.input_ids for s in wrapped]

    split = AutoTokenizer.from_pretrained(asset("qwen2_5"), split_special_tokens=True)
    split._tokenizer.encode_special_tokens = False  # state left behind by some other caller
    assert tokens_module._plain_backend(split) is None
