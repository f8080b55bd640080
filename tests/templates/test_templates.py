"""Template semantics: labels, masks, BOS, batching, tool/thinking parsing, auto, registry errors."""

from __future__ import annotations

from typing import Any

import pytest

from lmforge.conversation import Conversation, Message, ToolCall
from lmforge.errors import ConfigError
from lmforge.templates import get_template, list_templates, resolve_template
from lmforge.templates.auto import PROBE_ORDER
from lmforge.templates.parse import CALL_PARSERS
from lmforge.templates.registry import FAMILY_MODULES
from lmforge.templates.render import TOOL_TEXTS, fill, render, special_strings
from tests.helpers.templates import FAMILY_ASSET, tok_for, tokenizer

# A vocabulary per template family, so every template is checked with a tokenizer that has its
# special tokens; templates of families without an offline tokenizer use Qwen2.5's (their
# special strings are then plain text, which still exercises the label alignment).


# Templates whose special tokens are plain text in the stand-in vocabulary, so BPE may merge
# across their boundaries: checked for labels on the reply text only.
FOREIGN_VOCAB = {"gemma", "gemma2", "gemma3", "glm4", "llama4", "phi4", "zephyr"}

# The entries of lmforge.templates.families: those whose vocabulary (or a vocabulary with the same
# special tokens) is offline are checked with it; the others are foreign-vocabulary templates.
FAMILY_NAMES = {t.name for module in FAMILY_MODULES for t in module.TEMPLATES}
FAMILY_ASSET.update(
    {"smollm": "smollm2", "smollm2": "smollm2", "intern2": "internlm2", "cohere": "command_r"}
    | {name: "mistral_nemo" for name in ("ministral", "pixtral", "ministral3")}
    | {name: "mistral_v3" for name in ("llava_next_mistral", "llava_next_video_mistral")}
    | {"llama2_zh": "mistral_v1"}
)
for _name in FAMILY_NAMES - set(FAMILY_ASSET):
    _user = get_template(_name).user
    if _user.startswith("<|im_start|>") and get_template(_name).stop_words == ("<|im_end|>",):
        # ChatML: Qwen's vocabularies have its tokens
        FAMILY_ASSET[_name] = "qwen3" if get_template(_name).thinking == "qwen3" else "qwen2_5"
    elif _user.startswith("<|start_header_id|>"):  # the Llama 3 header tokens
        FAMILY_ASSET[_name] = "llama3_2"
FOREIGN_VOCAB |= FAMILY_NAMES - set(FAMILY_ASSET)


def three_turns(system: str | None = "Be brief.") -> Conversation:
    return Conversation(
        system=system,
        messages=[
            Message("user", "Hi!"),
            Message("assistant", "Hello there."),
            Message("user", "2+2?"),
            Message("assistant", "It is 4."),
            Message("user", "你好吗？"),
            Message("assistant", "我很好，谢谢。"),
        ],
    )


def trained_runs(labels: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    current: list[int] = []
    for label in labels:
        if label == -100:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(label)
    if current:
        runs.append(current)
    return runs


ALL_NAMES = [t.name for t in list_templates()]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_assistant_turn_is_trained_with_its_end(name: str) -> None:
    """Trained tokens are exactly the replies plus the end-of-turn text the model must emit."""
    template = get_template(name)
    tok = tok_for(name)
    sample = template.encode(tok, three_turns())
    assert len(sample.labels) == len(sample.input_ids)
    runs = [tok.decode(r) for r in trained_runs(sample.labels)]
    rendered = render(template, three_turns(), tok)
    expected = [rendered.text[s:e] for s, e, _ in rendered.spans]
    assert len(expected) == 3
    if name in FOREIGN_VOCAB:
        assert all(e.strip() in r for r, e in zip(runs, expected, strict=True))
        return
    assert [r.strip() for r in runs] == [e.strip() for e in expected]
    for reply, run in zip(("Hello there.", "It is 4.", "我很好，谢谢。"), runs, strict=True):
        assert reply in run
    end = (template.assistant_end or template.conversation_end).replace("{eos}", tok.eos_token or "")
    end = end.replace("{bos}", tok.bos_token or "")
    assert runs[-1].rstrip().endswith(end.strip()), runs[-1]


# Families without an offline tokenizer are left out: their special tokens would be plain text.
@pytest.mark.parametrize("name", [n for n in ALL_NAMES if n not in FOREIGN_VOCAB])
def test_whole_text_ids_equal_segment_ids(name: str) -> None:
    """Tokenizing the rendered pieces one by one gives the same ids as the whole text."""
    template = get_template(name)
    tok = tok_for(name)
    rendered = render(template, three_turns(), tok)
    whole = tok(rendered.text, add_special_tokens=False)["input_ids"]
    pieces = [i for text, _ in rendered.pieces for i in tok(text, add_special_tokens=False)["input_ids"]]
    sample = template.encode(tok, three_turns())
    assert sample.input_ids == whole
    if name in ("vicuna", "default", "empty", "fewshot"):
        # Plain-text boundaries ("Assistant: " + "Hello"): BPE merges the space into the reply's
        # first token, so pieces differ. This is why the encoder tokenizes whole texts and maps
        # labels by character offsets; the straddling token is trained.
        assert pieces != whole
        first_reply = tok.decode(trained_runs(sample.labels)[0])
        assert first_reply.strip().startswith("Hello there.")
        return
    assert pieces == whole


def test_mask_history_trains_only_the_last_turn() -> None:
    tok = tokenizer("qwen2_5")
    sample = get_template("qwen").encode(tok, three_turns(), mask_history=True)
    runs = trained_runs(sample.labels)
    assert [tok.decode(r) for r in runs] == ["我很好，谢谢。<|im_end|>"]


def test_train_on_prompt_trains_everything() -> None:
    tok = tokenizer("qwen2_5")
    sample = get_template("qwen").encode(tok, three_turns(), train_on_prompt=True)
    assert sample.labels == sample.input_ids


def test_train_on_prompt_with_mask_history_is_an_error() -> None:
    with pytest.raises(ConfigError, match="train_on_prompt and mask_history"):
        get_template("qwen").encode(
            tokenizer("qwen2_5"), three_turns(), train_on_prompt=True, mask_history=True
        )


@pytest.mark.parametrize("name", ["llama3", "llama3_2", "default", "alpaca", "deepseek3", "llama2"])
def test_never_a_doubled_bos(name: str) -> None:
    tok = tok_for(name) if name not in ("default", "alpaca") else tokenizer("llama3_2")
    ids = get_template(name).encode(tok, three_turns()).input_ids
    assert ids.count(tok.bos_token_id) == (3 if name == "llama2" else 1)  # Llama 2 opens each [INST] with <s>
    assert ids[0] == tok.bos_token_id
    assert ids[1] != tok.bos_token_id


def test_system_prompt_explicit_default_and_absent() -> None:
    tok = tokenizer("qwen2_5")
    qwen = get_template("qwen")
    assert "You are Qwen" in qwen.render_text(tok, three_turns(system=None))
    assert "You are Qwen" not in qwen.render_text(tok, three_turns(system="Custom."))
    assert qwen.render_text(tok, three_turns(system="")).startswith("<|im_start|>system\n<|im_end|>")
    assert (
        not get_template("qwen3").render_text(tok, three_turns(system=None)).startswith("<|im_start|>system")
    )


def test_encode_batch_equals_single_encodes() -> None:
    tok = tokenizer("qwen3")
    convs = [
        three_turns(),
        three_turns(system=None),
        Conversation(messages=[Message("user", "x"), Message("assistant", "y")]),
    ]
    template = get_template("qwen3")
    batch = template.encode_batch(tok, convs, mask_history=True)
    assert batch == [template.encode(tok, c, mask_history=True) for c in convs]


def test_generation_prompt_trains_nothing_and_prefixes_the_conversation() -> None:
    tok = tokenizer("llama3_2")
    template = get_template("llama3")
    conv = three_turns()
    prompt_conv = Conversation(system=conv.system, messages=conv.messages[:-1])
    prompt = template.encode(tok, prompt_conv, add_generation_prompt=True)
    full = template.encode(tok, conv)
    assert set(prompt.labels) == {-100}
    assert full.input_ids[: len(prompt.input_ids)] == prompt.input_ids


CALL = ToolCall(name="get_weather", arguments={"city": "巴黎", "days": 2})


@pytest.mark.parametrize(
    "name", ["qwen", "qwen3", "llama3", "llama4", "glm4", "mistral", "deepseek3", "default"]
)
def test_tool_call_round_trip(name: str) -> None:
    """What the template trains an assistant to write parses back into the same call."""
    template = get_template(name)
    tok = tok_for(name)
    conv = Conversation(
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        messages=[Message("user", "Weather?"), Message("assistant", "", tool_calls=[CALL])],
    )
    rendered = render(template, conv, tok)
    ((start, end, _),) = rendered.spans
    end_text = fill(template.assistant_end, special_strings(tok)) + fill(
        template.conversation_end, special_strings(tok)
    )
    reply = rendered.text[start:end]
    assert reply.endswith(end_text)
    parsed = template.parse_response(reply[: len(reply) - len(end_text)])
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [(CALL.name, CALL.arguments)]
    assert parsed.content == ""


def test_parse_thinking_and_plain_text() -> None:
    qwen3 = get_template("qwen3")
    parsed = qwen3.parse_response("<think>\nLet me add.\n</think>\n\nThe sum is 5.<|im_end|>")
    assert (parsed.content, parsed.reasoning, parsed.tool_calls) == ("The sum is 5.", "Let me add.", [])
    r1 = get_template("deepseekr1").parse_response("Only thinking so far\n</think>\n\nDone")
    assert (r1.content, r1.reasoning) == ("Done", "Only thinking so far")
    plain = get_template("qwen").parse_response("No tools here {not json}")
    assert (plain.content, plain.reasoning, plain.tool_calls) == ("No tools here {not json}", None, [])


def test_qwen3_drops_old_thinking_and_keeps_the_current() -> None:
    tok = tokenizer("qwen3")
    conv = Conversation(
        messages=[
            Message("user", "a"),
            Message("assistant", "b", reasoning="old thought"),
            Message("user", "c"),
            Message("assistant", "d", reasoning="new thought"),
        ]
    )
    text = get_template("qwen3").render_text(tok, conv)
    assert "old thought" not in text and "<think>\nnew thought\n</think>\n\nd" in text


@pytest.mark.parametrize(
    ("asset_name", "named"),
    [
        ("qwen2_5", "qwen"),
        ("qwen3", "qwen3"),
        ("deepseek_v3", "deepseek3"),
        ("mistral_v3", "mistral"),  # system prompt at the last user turn: earlier prompts are no prefix
        ("llama3", "llama3"),  # <|eot_id|> is an added special token, not in all_special_tokens
    ],
)
def test_auto_uses_the_tokenizer_template_with_the_same_labels(asset_name: str, named: str) -> None:
    tok = tokenizer(asset_name)
    auto = resolve_template(None, tok)
    assert auto.name == "auto"
    conv = three_turns()
    ours = get_template(named).encode(tok, conv)
    theirs = auto.encode(tok, conv)
    # Meta-Llama-3-8B-Instruct's template appends an assistant header after the last turn.
    assert theirs.input_ids[: len(ours.input_ids)] == ours.input_ids
    assert len(theirs.input_ids) == len(ours.input_ids) or named == "llama3"
    assert trained_runs(theirs.labels) == trained_runs(ours.labels)
    assert auto.jinja_chat_template() == tok.chat_template


WEATHER = ("get_weather", {"city": "Paris"})


@pytest.mark.parametrize(
    ("asset_name", "tool_format", "reply"),
    [
        (
            "qwen2_5",
            "qwen",
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
        ),
        (
            "qwen3",
            "qwen",
            '<think>\nAsk the tool.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": '
            '{"city": "Paris"}}\n</tool_call><|im_end|>',
        ),
        ("llama3_2", "llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>'),
        (
            "mistral_nemo",
            "mistral",
            '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1b2c3d4e"}]</s>',
        ),
        (
            "deepseek_r1",
            "deepseek",
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
            '{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>',
        ),
    ],
)
def test_auto_parses_tool_calls_in_the_format_its_own_template_writes(
    asset_name: str, tool_format: str, reply: str
) -> None:
    auto = resolve_template("auto", tokenizer(asset_name))
    assert auto.tool_format == tool_format
    parsed = auto.parse_response(reply)
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [WEATHER]
    assert parsed.content == ""


@pytest.mark.parametrize("asset_name", ["smollm2", "llama3", "chatglm3"])
def test_auto_whose_template_writes_no_tool_calls_parses_none(asset_name: str) -> None:
    # SmolLM2's, Llama 3.0's and ChatGLM3's jinja drop a turn's tool calls: no format reads them back,
    # so a reply holding <tool_call> tags is text, not a call in a format the model never saw.
    auto = resolve_template("auto", tokenizer(asset_name))
    assert auto.tool_format is None
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    parsed = auto.parse_response(text)
    assert parsed.tool_calls == [] and parsed.content == text


def test_every_tool_format_reads_back_the_calls_it_writes() -> None:
    assert set(CALL_PARSERS) == set(TOOL_TEXTS)
    assert set(PROBE_ORDER) == set(CALL_PARSERS) - {"default"}  # "default" writes Qwen's tagged calls
    for name, texts in TOOL_TEXTS.items():
        content, calls = CALL_PARSERS[name](texts.calls("", [ToolCall(*WEATHER)]))
        assert (content, [(c.name, c.arguments) for c in calls]) == ("", [WEATHER]), name


def test_auto_without_a_chat_template_is_a_config_error() -> None:
    import copy

    tok = copy.copy(tokenizer("qwen2_5"))
    tok.chat_template = None
    with pytest.raises(ConfigError, match="auto needs a tokenizer with a chat_template"):
        resolve_template("auto", tok)
    assert resolve_template(None, tok).name == "empty"


def test_unknown_template_suggests_the_closest_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'qwen3'"):
        get_template("qwen33")


def test_registry_covers_the_issue_list() -> None:
    wanted = {
        "qwen",
        "qwen3",
        "qwen3_nothink",
        "qwen2_vl",
        "qwen2_audio",
        "qwen2_omni",
        "llama2",
        "llama3",
        "llama4",
        "mllama",
        "deepseek",
        "deepseek3",
        "deepseekr1",
        "chatglm3",
        "default",
        "alpaca",
        "vicuna",
        "empty",
        "chatml",
        "mistral",
        "gemma",
        "gemma2",
        "gemma3",
        "glm4",
        "phi4",
        "yi",
        "zephyr",
    }
    assert wanted <= set(ALL_NAMES)
    assert all(t.stop_words or t.name == "empty" for t in list_templates())


def test_media_placeholders_become_family_tokens() -> None:
    tok = tokenizer("qwen2_5")
    conv = Conversation(
        messages=[Message("user", "<image>What is this?"), Message("assistant", "A cat.")], images=["x.png"]
    )
    text = get_template("qwen2_vl").render_text(tok, conv)
    assert "<|vision_start|><|image_pad|><|vision_end|>What is this?" in text


# ---- lmforge template list / render ----


def _cli(argv: list[str]) -> int:
    from lmforge.cli import main

    return main(argv)


def test_cli_list_names_every_template(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["template", "list"]) == 0
    out = capsys.readouterr().out
    for name in ALL_NAMES:
        assert f"\n{name} " in out
    assert "official" in out and "documented" in out


@pytest.fixture
def conv_file(tmp_path: Any) -> Any:
    import json

    path = tmp_path / "conv.json"
    path.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Weather in Paris?"},
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [
                            {
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                            }
                        ],
                    },
                    {"role": "tool", "content": "21C"},
                    {"role": "assistant", "content": "It is 21 °C."},
                ],
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "parameters": {"type": "object"}},
                    }
                ],
            },
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    return path


def test_cli_render_json_matches_encode(conv_file: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from lmforge.assets import get_asset

    folder = str(get_asset("qwen2_5"))
    assert (
        _cli(
            [
                "template",
                "render",
                "--template",
                "qwen",
                "--tokenizer",
                folder,
                "--input",
                str(conv_file),
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    conv = Conversation.from_openai(json.loads(conv_file.read_text(encoding="utf-8")))
    sample = get_template("qwen").encode(tokenizer("qwen2_5"), conv)
    assert (out["input_ids"], out["labels"]) == (sample.input_ids, sample.labels)
    assert out["text"].endswith("<|im_start|>assistant\nIt is 21 °C.<|im_end|>\n")


def test_cli_render_marks_trained_parts(conv_file: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from lmforge.assets import get_asset

    folder = str(get_asset("qwen2_5"))
    assert (
        _cli(["template", "render", "--template", "qwen", "--tokenizer", folder, "--input", str(conv_file)])
        == 0
    )
    out = capsys.readouterr().out
    assert "[[It is 21 °C.<|im_end|>]]" in out
    assert (
        '[[<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>]]'
        in out
    )
    assert "[[<|im_start|>user" not in out

    assert (
        _cli(
            [
                "template",
                "render",
                "--template",
                "qwen",
                "--tokenizer",
                folder,
                "--input",
                str(conv_file),
                "--add-generation-prompt",
            ]
        )
        == 0
    )
    assert "[[" not in capsys.readouterr().out.split("\n[qwen:")[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--template", "qwen9"], "did you mean"),
        (["--input", "missing.json"], "no such file"),
        (["--tokenizer", "/no/such/folder"], "not a folder"),
    ],
    ids=["bad-template", "missing-input", "bad-tokenizer"],
)
def test_cli_render_errors_are_one_line_exit_2(
    conv_file: Any, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    from lmforge.assets import get_asset

    base = {"--template": "qwen", "--tokenizer": str(get_asset("qwen2_5")), "--input": str(conv_file)}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = ["template", "render"] + [x for kv in base.items() for x in kv]
    assert _cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_cli_render_bad_json_names_the_file(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from lmforge.assets import get_asset

    bad = tmp_path / "bad.json"
    bad.write_text('{"messages": [{"role": "robot", "content": "x"}]}', encoding="utf-8")
    argv = [
        "template",
        "render",
        "--template",
        "qwen",
        "--tokenizer",
        str(get_asset("qwen2_5")),
        "--input",
        str(bad),
    ]
    assert _cli(argv) == 2
    assert "bad.json: message 0: unknown role 'robot'" in capsys.readouterr().err


def test_qwen3_thinking_off_puts_the_empty_block_in_the_prompt() -> None:
    tok = tokenizer("qwen3")
    conv = Conversation(messages=[Message("user", "a"), Message("assistant", "b")])
    template = get_template("qwen3")
    on = template.encode(tok, conv)
    off = template.encode(tok, conv, enable_thinking=False)
    assert on.input_ids == off.input_ids
    assert [tok.decode(r) for r in trained_runs(on.labels)] == ["<think>\n\n</think>\n\nb<|im_end|>"]
    assert [tok.decode(r) for r in trained_runs(off.labels)] == ["b<|im_end|>"]
    prompt = template.encode(
        tok, Conversation(messages=conv.messages[:1]), add_generation_prompt=True, enable_thinking=False
    )
    assert off.input_ids[: len(prompt.input_ids)] == prompt.input_ids


def test_deepseekr1_thinking_off_matches_its_prompt() -> None:
    tok = tokenizer("deepseek_r1")
    template = get_template("deepseekr1")
    conv = Conversation(messages=[Message("user", "a"), Message("assistant", "b")])
    off = template.encode(tok, conv, enable_thinking=False)
    prompt = template.encode(
        tok, Conversation(messages=conv.messages[:1]), add_generation_prompt=True, enable_thinking=False
    )
    assert off.input_ids[: len(prompt.input_ids)] == prompt.input_ids
    assert [tok.decode(r) for r in trained_runs(off.labels)] == ["b<｜end▁of▁sentence｜>"]


@pytest.mark.parametrize("name", ["qwen", "qwen3", "llama3", "deepseek3"])
def test_piecewise_fallback_equals_the_offset_path(name: str) -> None:
    """The fallback for tokenizers without offsets gives the same ids and labels where pieces end
    at special tokens (every chat template with its own vocabulary here)."""
    from lmforge.templates.tokens import _encode_pieces

    template, tok = get_template(name), tok_for(name)
    for conv in (three_turns(), three_turns(system=None)):
        for mask_history in (False, True):
            rendered = render(template, conv, tok)
            assert _encode_pieces(tok, rendered, False, mask_history) == template.encode(
                tok, conv, mask_history=mask_history
            )


def test_auto_labels_tool_call_turns_like_the_named_template() -> None:
    tok = tokenizer("qwen3")
    conv = Conversation(
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        messages=[
            Message("user", "Weather?"),
            Message("assistant", "", tool_calls=[CALL]),
            Message("tool", "21C"),
            Message("assistant", "It is 21C.", reasoning="The tool said so."),
        ],
    )
    ours = get_template("qwen3").encode(tok, conv)
    theirs = resolve_template("auto", tok).encode(tok, conv)
    assert theirs.input_ids == ours.input_ids
    assert trained_runs(theirs.labels) == trained_runs(ours.labels)


@pytest.mark.parametrize("name", ["qwen", "llama2", "mistral", "gemma3"])
def test_placeholder_text_in_data_is_kept_verbatim(name: str) -> None:
    """Braces in a system prompt or message ({content}, {eos}) are data, not template slots."""
    tok = tok_for(name)
    conv = Conversation(
        system="Answer as {content} with {eos}.",
        messages=[Message("user", "Fill {system} and {tools}"), Message("assistant", "Literal {content}")],
    )
    text = get_template(name).render_text(tok, conv)
    for piece in ("Answer as {content} with {eos}.", "Fill {system} and {tools}", "Literal {content}"):
        assert piece in text


@pytest.mark.parametrize("name", sorted(set(FAMILY_ASSET) - FOREIGN_VOCAB))
def test_special_stop_words_are_single_tokens_of_the_family(name: str) -> None:
    """The server matches special stop words as token ids, so they must be one token each."""
    tok = tok_for(name)
    special = [w for w in get_template(name).stop_words if w.startswith("<") and w.endswith(">")]
    for word in special:
        assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1, word
    end = fill(get_template(name).assistant_end or get_template(name).conversation_end, special_strings(tok))
    assert end.strip(), f"{name}: a reply must end with text the model learns to emit"


def test_fill_puts_values_in_once_and_keeps_unknown_fields() -> None:
    specials = {"bos": "<s>", "eos": "</s>"}
    # Braces inside a value are not treated as fields; an unknown field stays as written.
    assert fill("{bos}[{content}]{eos}", specials, "use {eos} here") == "<s>[use {eos} here]</s>"
    assert fill("{system}|{tools}|{other}", specials, system="S", tools="T") == "S|T|{other}"
    assert fill("no fields", specials, "x") == "no fields"
    assert fill("{content}{content}", specials, "ab") == "abab"
