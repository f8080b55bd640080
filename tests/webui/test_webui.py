"""The web UI's server-side parts without a browser: exposure rules, literal form values, paths, jobs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import typing
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytest.importorskip("gradio", reason="gradio is not installed (pip install '.[webui]')")

from lmforge.cli.webui import AUTH_ENV, check_exposure, parse_auth  # noqa: E402
from lmforge.config import FinetuningArguments  # noqa: E402
from lmforge.errors import ConfigError  # noqa: E402
from lmforge.webui import paths  # noqa: E402
from lmforge.webui.app import job_view  # noqa: E402
from lmforge.webui.form import (  # noqa: E402
    FORM_DEFAULTS,
    check_run,
    form_to_values,
    stages,
    to_yaml,
    values_to_form,
)
from lmforge.webui.jobs import STATES, JobManager  # noqa: E402
from lmforge.webui.labels import STATE_LABELS, state_label  # noqa: E402
from tests.helpers.serving import free_port  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]


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
    # a new server on the same workdir lists the job again from its record, failed with the same error
    (again,) = JobManager(tmp_path / "work").all()
    assert (again.id, again.process, again.state(), again.error()) == (job.id, None, "failed", error)
    line, _frame, _log = job_view(again, "zh")
    assert line.startswith("**失败** · 步数 0/?") and "failed" not in line


def test_a_run_that_ended_unseen_is_judged_from_its_log_and_outputs(tmp_path: Path) -> None:
    """No server saw the exit code (it was restarted meanwhile): stopped, finished or failed from the files."""
    ended = subprocess.Popen(["true"])
    ended.wait()
    cases = {
        "stopped": ("lmforge train: stopped early; resume with resume_from_checkpoint=x\n", False),
        "finished": ("trained\n", True),
        "failed": ("Traceback ...\nMemoryError\n", False),
    }
    for name, (log, results) in cases.items():
        folder, output_dir = tmp_path / "work" / "jobs" / f"0-{name}", tmp_path / name
        folder.mkdir(parents=True)
        output_dir.mkdir()
        (folder / "train.log").write_text(log)
        if results:
            (output_dir / "all_results.json").write_text("{}")
        record = {
            "id": f"0-{name}",
            "output_dir": str(output_dir),
            "pid": ended.pid,
            "started": time.time() - 60,
        }
        record["argv"] = [sys.executable, "-m", "lmforge", "train", str(folder / "config.yaml")]
        (folder / "job.json").write_text(json.dumps(record))
    (tmp_path / "work" / "jobs" / "1-broken").mkdir()
    (tmp_path / "work" / "jobs" / "1-broken" / "job.json").write_text("{not json")
    jobs = JobManager(tmp_path / "work")
    assert {job.id: job.state() for job in jobs.all()} == {f"0-{name}": name for name in cases}
    assert jobs.get("0-failed").error() == "MemoryError"


def test_job_states_have_chinese_labels() -> None:
    assert set(STATE_LABELS) == set(STATES)
    for state in STATES:
        en, zh = state_label(state, "en"), state_label(state, "zh")
        assert en == state and zh != en and all("\u4e00" <= char <= "\u9fff" for char in zh), (state, zh)


@contextlib.contextmanager
def webui(workdir: Path, log: Path) -> Iterator[str]:
    """``lmforge webui`` on a free port of 127.0.0.1; its URL once it answers."""
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lmforge", "webui", "--port", str(port), "--workdir", str(workdir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"},
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_a_restarted_server_lists_the_jobs_it_started(tmp_path: Path, tiny_model) -> None:
    """A job started through one server, which then stops mid-run, is listed by the next server on that workdir."""
    client_module = pytest.importorskip("gradio_client")
    workdir, output_dir = tmp_path / "work", tmp_path / "saves" / "short"
    data = str(REPO_ROOT / "examples" / "data")
    form = {
        **FORM_DEFAULTS,
        "model_name_or_path": str(tiny_model("llama")),
        "dataset_dir": data,
        "dataset": ["identity_demo"],
        "max_steps": 2,
        "gradient_accumulation_steps": 1,
        "cutoff_len": 128,
        "logging_steps": 1,
        "output_dir": str(output_dir),
    }
    with webui(workdir, tmp_path / "server.log") as url:
        client = client_module.Client(url, verbose=False)
        client.predict(data, [], "en", api_name="/on_dataset_dir")  # as the page does: dataset choices first
        started, _ = client.predict(*form.values(), "en", api_name="/on_start")
    assert started.startswith("Started job"), started
    (pid_file,) = (workdir / "jobs").glob("*/pid")
    job_id = pid_file.parent.name
    try:
        with webui(workdir, tmp_path / "server.log") as url:
            client = client_module.Client(url, verbose=False)
            deadline = time.monotonic() + 240
            while True:
                listed, line, _plot, _log = client.predict(None, "en", api_name="/refresh")
                assert listed["value"] == job_id and job_id in listed["choices"][0][0], listed
                if line.startswith("**finished**") or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert line.startswith("**finished** · step 2/2") and str(output_dir) in line, line
            assert listed["choices"][0][0] == f"{job_id} · finished · {output_dir}"
    finally:  # the run outlives both servers by design; end it if it is still going
        with contextlib.suppress(OSError):
            if str(pid_file.parent).encode() in Path(f"/proc/{pid_file.read_text()}/cmdline").read_bytes():
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
    assert (output_dir / "adapter_model.safetensors").is_file()


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
