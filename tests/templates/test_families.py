"""Every LLaMA-Factory template name resolves, and the family-module entries behave like the others.

The name lists are facts read from LLaMA-Factory's ``src/llamafactory/data/template.py`` (the names
passed to ``register_template``): at tag v0.9.2 (83 names) and in its current version (124).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.cli import main as lmforge_main
from lmforge.conversation import Conversation, Message
from lmforge.templates import get_template, list_templates
from lmforge.templates.registry import FAMILY_MODULES, PROVEN_AGAINST, TEMPLATES
from tests.helpers.templates import _tokenizer, check_jinja, jinja_cases

LLAMAFACTORY_0_9_2 = [
    "alpaca",
    "aquila",
    "atom",
    "baichuan",
    "baichuan2",
    "bailing",
    "belle",
    "bluelm",
    "breeze",
    "chatglm2",
    "chatglm3",
    "chatml",
    "chatml_de",
    "codegeex2",
    "codegeex4",
    "cohere",
    "cpm",
    "cpm3",
    "dbrx",
    "deepseek",
    "deepseek3",
    "deepseekcoder",
    "default",
    "empty",
    "exaone",
    "falcon",
    "fewshot",
    "gemma",
    "glm4",
    "granite3",
    "index",
    "intern",
    "intern2",
    "llama2",
    "llama2_zh",
    "llama3",
    "mllama",
    "moonlight",
    "llava",
    "llava_next",
    "llava_next_llama3",
    "llava_next_mistral",
    "llava_next_qwen",
    "llava_next_yi",
    "llava_next_video",
    "llava_next_video_mistral",
    "llava_next_video_yi",
    "marco",
    "minicpm_v",
    "minicpm_o",
    "ministral",
    "mistral",
    "mistral_small",
    "olmo",
    "openchat",
    "openchat-3.6",
    "opencoder",
    "orion",
    "paligemma",
    "paligemma_chat",
    "phi",
    "phi_small",
    "phi4",
    "pixtral",
    "qwen",
    "qwen2_audio",
    "qwen2_vl",
    "sailor",
    "skywork_o1",
    "solar",
    "starchat",
    "telechat",
    "telechat2",
    "vicuna",
    "video_llava",
    "xuanyuan",
    "xverse",
    "yayi",
    "yi",
    "yi_vl",
    "yuan",
    "zephyr",
    "ziya",
]

# Added after 0.9.2 (LLaMA-Factory's current template.py, 124 names in all).
LLAMAFACTORY_ADDED = [
    "aeva",
    "bailing_v2",
    "cpm4",
    "deepseekr1",
    "dots_ocr",
    "ernie",
    "ernie_nothink",
    "ernie_vl",
    "falcon_h1",
    "gemma2",
    "gemma3",
    "gemma3n",
    "gemma4",
    "gemma4n",
    "glm4_5v",
    "glm4_7",
    "glm4_moe",
    "glm4v",
    "glm_ocr",
    "glmz1",
    "gpt_oss",
    "granite3_vision",
    "granite4",
    "hunyuan",
    "hunyuan_small",
    "hy3",
    "hy_dense_1_8b",
    "hy_dense_7b",
    "intern_s1",
    "intern_vl",
    "keye_vl",
    "kimi_vl",
    "lfm2",
    "lfm2_vl",
    "llama4",
    "mimo",
    "mimo_v2",
    "mimo_vl",
    "minicpm_v_4_6",
    "minimax1",
    "minimax2",
    "ministral3",
    "moss_vl",
    "phi4_mini",
    "qwen2_omni",
    "qwen3",
    "qwen3_5",
    "qwen3_5_nothink",
    "qwen3_6",
    "qwen3_nothink",
    "qwen3_omni",
    "qwen3_omni_nothink",
    "qwen3_vl",
    "qwen3_vl_nothink",
    "seed_coder",
    "seed_oss",
    "smollm",
    "smollm2",
    "youtu",
    "youtu_vl",
]

FAMILY_NAMES = sorted(t.name for module in FAMILY_MODULES for t in module.TEMPLATES)


def test_the_name_lists_are_llamafactorys() -> None:
    assert len(LLAMAFACTORY_0_9_2) == len(set(LLAMAFACTORY_0_9_2)) == 83
    assert not set(LLAMAFACTORY_ADDED) & set(LLAMAFACTORY_0_9_2)
    # 0.9.2 names its current version dropped (19) + the added ones = its 124 names.
    assert len(set(LLAMAFACTORY_0_9_2)) - 19 + len(LLAMAFACTORY_ADDED) == 124


@pytest.mark.parametrize("name", LLAMAFACTORY_0_9_2 + LLAMAFACTORY_ADDED)
def test_every_llamafactory_name_resolves(name: str) -> None:
    template = get_template(name)
    assert template.name == name
    assert template.families, f"{name}: say which model families it serves"


def test_only_llama3_2_is_our_own_name() -> None:
    assert set(TEMPLATES) - set(LLAMAFACTORY_0_9_2) - set(LLAMAFACTORY_ADDED) == {"llama3_2"}


def test_legacy_names_say_so() -> None:
    """The names LLaMA-Factory's current version no longer registers are marked legacy."""
    dropped = "aquila atom baichuan baichuan2 belle bluelm chatglm2 codegeex2 codegeex4 cpm cpm3"
    dropped += " intern marco orion skywork_o1 telechat xverse yayi ziya"
    for name in dropped.split():
        assert "legacy" in get_template(name).note, name


# Family entries whose media lmforge trains and serves (their notes say which).
MEDIA_DONE = {"llava"}


def test_multimodal_entries_say_media_is_separate() -> None:
    for t in list_templates():
        if t.name in MEDIA_DONE:
            assert "pictures trained and served" in t.note, t.name
        elif t.name in FAMILY_NAMES and (t.image_token or t.video_token or t.audio_token):
            assert "separate issue" in t.note, t.name


def test_proven_entries_exist() -> None:
    assert set(PROVEN_AGAINST) <= set(TEMPLATES)
    assert {"intern2", "cohere", "ministral", "smollm2", "smollm"} <= set(PROVEN_AGAINST)


def test_template_list_marks_official_and_documented(capsys: pytest.CaptureFixture[str]) -> None:
    assert lmforge_main(["template", "list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    status = {row[0]: row[1] for row in (line.split() for line in lines[1:-2])}
    official = sum(value == "official" for value in status.values())
    assert lines[-1] == f"{len(TEMPLATES)} templates: {official} official (proven token for token), " + (
        f"{len(TEMPLATES) - official} documented"
    )
    assert status["intern2"] == "official" and status["cohere"] == "official"
    assert status["gpt_oss"] == "documented" and status["baichuan2"] == "documented"
    assert set(status) == set(TEMPLATES) | {"auto"}


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_family_entry_jinja_renders_like_the_template(name: str) -> None:
    """Exported tokenizers prompt like lmforge trains, for every case (see test_templates_jinja)."""
    for case, part in jinja_cases(name):
        check_jinja(name, case, part)


def test_chatglm2_numbers_its_rounds() -> None:
    tok = _tokenizer("qwen2_5")
    conv = Conversation(
        messages=[
            Message("user", "你好"),
            Message("assistant", "你好！"),
            Message("user", "再见"),
            Message("assistant", "再见！"),
        ]
    )
    text = get_template("chatglm2").render_text(tok, conv)
    assert text.startswith("[gMASK]sop[Round 1]\n\n问：你好\n\n答：你好！")
    assert "[Round 2]\n\n问：再见\n\n答：再见！" in text


@pytest.mark.parametrize(
    ("name", "image"),
    [
        ("llava", "<image>"),
        ("qwen3_vl", "<|vision_start|><|image_pad|><|vision_end|>"),
        ("mistral_small", "[IMG]"),
        ("glm4v", "<|begin_of_image|><|image|><|end_of_image|>"),
        ("minicpm_v", "(<image>./</image>)"),
    ],
)
def test_multimodal_text_format_has_the_media_token(name: str, image: str) -> None:
    tok = _tokenizer("qwen2_5")
    conv = Conversation(
        messages=[Message("user", "<image>What is this?"), Message("assistant", "A cat.")], images=["x.png"]
    )
    text = get_template(name).render_text(tok, conv)
    assert image + "What is this?" in text


def test_docs_list_every_template_with_its_status() -> None:
    """docs/templates.md's full list stays in step with the registry (regenerate it when adding one)."""
    docs = (Path(__file__).parents[2] / "docs" / "templates.md").read_text(encoding="utf-8")
    for name, template in TEMPLATES.items():
        status = "official" if name in PROVEN_AGAINST else "documented"
        assert f"| `{name}` | {template.families.replace('|', chr(92) + '|')} | {status}" in docs, name
