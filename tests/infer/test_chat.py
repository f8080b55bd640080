"""`lmforge chat`: streamed replies, history across turns, clear and exit, as a real terminal process."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

import pytest
import yaml


def test_chat_session_keeps_history_and_clear_resets_it(tiny_model):
    from lmforge.config import build_config
    from lmforge.infer.engine import SamplingOptions
    from lmforge.infer.hf_engine import HuggingFaceEngine
    from lmforge.infer.prompting import PromptBuilder
    from lmforge.infer.session import ChatSession

    config = build_config({"model_name_or_path": str(tiny_model("llama")), "template": "qwen"})
    engine = HuggingFaceEngine.from_config(config)
    prompts = PromptBuilder.from_config(config, engine.tokenizer)
    session = ChatSession(engine, prompts, SamplingOptions(max_new_tokens=4, temperature=0))
    out = io.StringIO()

    async def talk():
        await engine.start()
        first = await session.reply("Hello", out)
        second = await session.reply("And again", out)
        history = [m.role for m in session.messages]
        session.clear()
        again = await session.reply("Hello", out)
        await engine.close()
        return first, second, history, again

    first, second, history, again = asyncio.run(talk())
    assert history == ["user", "assistant", "user", "assistant"]
    assert first and first == again  # greedy, and clear really forgot the earlier turns
    assert out.getvalue() == f"{first}\n{second}\n{again}\n"  # every streamed piece reached the terminal


def test_chat_command_streams_and_obeys_clear_and_exit(tiny_model, tmp_path):
    cfg = tmp_path / "chat.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": str(tiny_model("llama")),
                "template": "qwen",
                "do_sample": False,
                "max_new_tokens": 5,
                "default_system": "Be brief.",
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "lmforge", "chat", str(cfg)],
        input="Hello\nclear\nHello\nexit\nnever read\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "type `clear`" in out.lower() or "`clear`" in out
    replies = out.split("Assistant: ")[1:]
    assert len(replies) == 2
    assert replies[0].split("History cleared.")[0].split("\nUser:")[0] == replies[1].split("\nUser:")[0]
    assert "History cleared." in out


def test_chat_attaches_pictures_that_stay_in_the_history(tiny_model, tmp_path):
    """`/image PATH` sends a picture with the next message; later turns still see it (the whole
    history is re-encoded each turn), and a text model says it cannot take pictures."""
    from PIL import Image

    from lmforge.config import build_config
    from lmforge.infer.engine import SamplingOptions
    from lmforge.infer.hf_engine import HuggingFaceEngine
    from lmforge.infer.prompting import PromptBuilder
    from lmforge.infer.session import ChatSession

    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    Image.new("RGB", (84, 56), (220, 20, 20)).save(red)
    Image.new("RGB", (84, 56), (20, 20, 220)).save(blue)
    config = build_config({"model_name_or_path": str(tiny_model("qwen2_vl")), "template": "qwen2_vl"})
    engine = HuggingFaceEngine.from_config(config)
    prompts = PromptBuilder.from_config(config, engine.tokenizer)

    async def conversation(picture):
        session = ChatSession(engine, prompts, SamplingOptions(max_new_tokens=6, temperature=0))
        out = io.StringIO()
        assert "Attached" in session.attach("image", str(picture))
        first = await session.reply("What is this?", out)
        second = await session.reply("Say more.", out)
        return first, second, session

    async def talk():
        await engine.start()
        red_turns = await conversation(red)
        blue_turns = await conversation(blue)
        await engine.close()
        return red_turns, blue_turns

    (red_first, red_second, session), (blue_first, blue_second, _) = asyncio.run(talk())
    assert red_first != blue_first and red_second != blue_second  # the second turn still sees the picture
    assert session.messages[0].content == "<image>What is this?" and len(session.media) == 1
    with pytest.raises(ValueError, match="takes image, video; it cannot take audio input"):
        session.attach("audio", str(red))

    text_config = build_config({"model_name_or_path": str(tiny_model("llama")), "template": "qwen"})
    text_engine = HuggingFaceEngine.from_config(text_config)
    text_session = ChatSession(
        text_engine,
        PromptBuilder.from_config(text_config, text_engine.tokenizer),
        SamplingOptions(max_new_tokens=2),
    )
    with pytest.raises(ValueError, match="this model takes text only"):
        text_session.attach("image", str(red))


def test_chat_command_attaches_an_image(tiny_model, tmp_path):
    from PIL import Image

    Image.new("RGB", (84, 56), (220, 20, 20)).save(tmp_path / "red.png")
    cfg = tmp_path / "chat.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"model_name_or_path": str(tiny_model("qwen2_vl")), "template": "qwen2_vl", "max_new_tokens": 3}
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "lmforge", "chat", str(cfg)],
        input=f"/image {tmp_path / 'missing.png'}\n/image {tmp_path / 'red.png'}\nWhat is it?\nexit\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Type `/image PATH` or `/video PATH` to attach a file" in result.stdout
    assert "no such file:" in result.stdout and "Attached red.png (image)" in result.stdout
    assert result.stdout.count("Assistant: ") == 1
