"""`lmforge chat`: streamed replies, history across turns, clear and exit, as a real terminal process."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

import yaml


def test_chat_session_keeps_history_and_clear_resets_it(tiny_model):
    from lmforge.config import build_config
    from lmforge.infer.chat import ChatSession
    from lmforge.infer.engine import SamplingOptions
    from lmforge.infer.hf_engine import HuggingFaceEngine
    from lmforge.infer.prompting import PromptBuilder

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
