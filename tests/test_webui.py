"""The web UI's server-side parts without a browser: exposure rules, literal form values, paths, jobs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import yaml

pytest.importorskip("gradio", reason="gradio is not installed (pip install '.[webui]')")

from lmforge.cli.webui import AUTH_ENV, check_exposure, parse_auth  # noqa: E402
from lmforge.config import FinetuningArguments  # noqa: E402
from lmforge.errors import ConfigError  # noqa: E402
from lmforge.webui import paths  # noqa: E402
from lmforge.webui.jobs import JobManager  # noqa: E402
from lmforge.webui.settings import (  # noqa: E402
    FORM_DEFAULTS,
    check_run,
    form_to_values,
    stages,
    to_yaml,
    values_to_form,
)
from serve_process import free_port  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_refuses_to_listen_on_every_interface_without_auth() -> None:
    env = {k: v for k, v in os.environ.items() if k != AUTH_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "lmforge", "webui", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a password" in result.stderr
    assert "--auth user:password" in result.stderr and f"{AUTH_ENV}=user:password" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_exposure_rules() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_exposure(host, None)
    check_exposure("0.0.0.0", ("admin", "secret"))
    with pytest.raises(ConfigError, match="without a password"):
        check_exposure("192.168.1.5", None)
    assert parse_auth("admin:se:cret") == ("admin", "se:cret")
    for bad in ("admin", "admin:", ":secret"):
        with pytest.raises(ConfigError, match="user:password"):
            parse_auth(bad)


def test_stages_are_read_from_the_config_type() -> None:
    declared = typing.get_args(typing.get_type_hints(FinetuningArguments)["stage"])
    assert stages() == list(declared)
    assert {"sft", "pt"} <= set(stages())


def test_form_values_round_trip_and_pick_the_method_keys() -> None:
    form = {**FORM_DEFAULTS, "finetuning_type": "freeze", "dataset": ["a", "b"], "max_steps": 7.0}
    values = form_to_values(form)
    assert "lora_rank" not in values and values["freeze_trainable_layers"] == 2
    assert values["dataset"] == "a,b" and values["max_steps"] == 7 and "num_train_epochs" not in values
    back, ignored = values_to_form({**yaml.safe_load(to_yaml(values)), "warmup_ratio": 0.1})
    assert back["dataset"] == ["a", "b"] and back["finetuning_type"] == "freeze"
    assert ignored == ["warmup_ratio"]


def test_paths_are_checked_and_pickles_refused(tmp_path: Path, tiny_model) -> None:
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ConfigError, match="pickle files the web UI never loads"):
        paths.model_folder(str(pickled))
    with pytest.raises(ConfigError, match="no such folder"):
        paths.model_folder(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="is a file"):
        paths.model_folder(str(pickled / "config.json"))
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        paths.adapter_folder(str(tiny_model("llama")))
    with pytest.raises(ConfigError, match="no dataset_info.json"):
        paths.dataset_folder(str(tmp_path))
    assert paths.model_folder(str(tiny_model("llama"))) == tiny_model("llama")


def test_shell_text_in_the_form_stays_a_literal_value(
    tmp_path: Path, tiny_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`; rm -rf /` and `$(touch pwned)` reach the run as YAML values, never a shell; the run fails on them."""
    monkeypatch.chdir(tmp_path)
    form = {
        **FORM_DEFAULTS,
        "model_name_or_path": str(tiny_model("llama")),
        "dataset_dir": str(REPO_ROOT / "examples" / "data"),
        "dataset": ["identity_demo"],
        "lora_target": "; rm -rf /",
        "output_dir": "$(touch pwned)",
        "max_steps": 1,
    }
    run = check_run(form_to_values(form))
    job = JobManager(tmp_path / "work").start(run)
    assert job.argv == [sys.executable, "-m", "lmforge", "train", str(job.config_path)]
    written = yaml.safe_load(job.config_path.read_text(encoding="utf-8"))
    assert written["lora_target"] == "; rm -rf /" and written["output_dir"] == "$(touch pwned)"
    deadline = time.monotonic() + 240
    while job.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert job.state() == "failed"
    error = job.error()
    assert error is not None and "\n" not in error and "; rm -rf /" in error, job.log_tail()
    assert not (tmp_path / "pwned").exists()
    assert (REPO_ROOT / "pyproject.toml").is_file()


def test_chat_takes_pictures_for_a_vision_model_and_refuses_them_for_text(tmp_path: Path, tiny_model) -> None:
    """Two turns with the tiny Qwen2-VL, a picture in the first; the text-only tiny Llama says it takes none."""
    import asyncio

    from PIL import Image

    from lmforge.webui.chat import ChatModel, PageChat, chat_values

    picture = tmp_path / "square.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(picture)

    async def talk(
        model_dir: Path, template: str, turns: list[tuple[str, list[str]]]
    ) -> tuple[list[int], PageChat]:
        chat = ChatModel()
        await chat.load(chat_values(str(model_dir), "", template, "huggingface", False))
        page, updates = PageChat(), []
        try:
            for text, files in turns:
                count, before = 0, page
                async for _shown, kept in chat.stream(before, text, "Be brief.", 6, files):
                    count, page = count + 1, kept
                updates.append(count)
        finally:
            await chat.unload()
        return updates, page

    updates, page = asyncio.run(
        talk(tiny_model("qwen2_vl"), "qwen2_vl", [("What is this?", [str(picture)]), ("And?", [])])
    )
    assert all(count >= 2 for count in updates)  # streamed: pieces, then the complete reply
    assert [kind for kind, _, _ in page.media] == ["image"]
    assert page.messages[0].content == "<image>What is this?" and len(page.messages) == 4
    assert "📎 square.png" in page.shown[0]["content"]
    with pytest.raises(ValueError, match="text only"):
        asyncio.run(talk(tiny_model("llama"), "chatml", [("What is this?", [str(picture)])]))
