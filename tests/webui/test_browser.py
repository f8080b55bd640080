"""The web UI in a real headless Chromium: preview, train, watch, stop, chat, export.

One server (``lmforge webui`` as a child process on 127.0.0.1) and one browser serve the
whole module; the tests run in file order and share what they made (the trained adapter).
Screenshots of each tab land in the module's tmp folder (``screens/``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.serving import free_port

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install '.[dev]')"
)
pytest.importorskip("gradio", reason="gradio is not installed (pip install '.[webui]')")

CHROMIUM = os.environ.get("LMFORGE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
if not Path(CHROMIUM).exists():
    pytest.skip(
        f"no browser at {CHROMIUM}: `make test` installs Debian's chromium (mk/webui.mk)",
        allow_module_level=True,
    )
START_TIMEOUT_S = 180
RUN_TIMEOUT_MS = 240_000
REPO_ROOT = Path(__file__).resolve().parents[2]
README_SHOT = os.environ.get("LMFORGE_WEBUI_README_SHOT")  # set to write docs/images/webui_train.png


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("webui")


@pytest.fixture(scope="module")
def server(folder: Path) -> Iterator[str]:
    port = free_port()
    log = (folder / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmforge", "webui", "--port", str(port), "--workdir", str(folder / "work")],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"lmforge webui did not start:\n{(folder / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    yield url
    for pid_file in (folder / "work" / "jobs").glob("*/pid"):  # runs outlive the server by design
        cmdline = Path(f"/proc/{pid_file.read_text()}/cmdline")
        with contextlib.suppress(OSError):  # only a run of this test, still going, is ended
            if str(pid_file.parent).encode() in cmdline.read_bytes():
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def page(server: str, folder: Path) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(server)
        page.wait_for_selector("#train-model textarea")
        yield page
        browser.close()


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    return {}


def screenshot(page: Any, folder: Path, name: str) -> Path:
    path = folder / "screens" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def fill(page: Any, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id}").locator("textarea, input").first
    box.fill(value)
    box.press("Enter" if box.evaluate("e => e.tagName") == "INPUT" else "Tab")


def fill_number(page: Any, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input")
    box.fill(str(value))
    box.press("Tab")


def wait_text(page: Any, selector: str, text: str, timeout: int = 60_000) -> None:
    page.wait_for_function(
        "([sel, text]) => { const e = document.querySelector(sel); "
        "return e && (e.value !== undefined && e.value.includes(text) || e.innerText.includes(text)); }",
        arg=[selector, text],
        timeout=timeout,
    )


def wait_match(page: Any, selector: str, pattern: str, timeout: int = 60_000) -> None:
    """Wait until the element's text matches a JavaScript regular expression."""
    page.wait_for_function(
        "([sel, pattern]) => { const e = document.querySelector(sel); "
        "return e && new RegExp(pattern).test(e.innerText); }",
        arg=[selector, pattern],
        timeout=timeout,
    )


def set_up_run(page: Any, model: Path, output_dir: Path, max_steps: int, save_steps: int) -> None:
    """Fill the Train form for a short run of the tiny model on examples/data's identity_demo."""
    fill(page, "train-model", str(model))
    fill_number(page, "train-max-steps", max_steps)
    fill_number(page, "train-save-steps", save_steps)
    fill_number(page, "train-logging-steps", 1)
    fill_number(page, "train-accumulation", 1)
    fill_number(page, "train-cutoff", 128)
    fill_number(page, "train-lr", 0.001)
    fill(page, "train-output-dir", str(output_dir))
    fill(page, "train-dataset-dir", str(REPO_ROOT / "examples" / "data"))
    page.locator("#train-dataset input").click()
    page.get_by_role("option", name="identity_demo").click()
    page.keyboard.press("Escape")
    wait_text(page, "#train-yaml", "dataset: identity_demo")
    wait_text(page, "#train-yaml", f"max_steps: {max_steps}")
    wait_text(page, "#train-yaml", f"output_dir: {output_dir}")


def test_train_preview_run_and_finish(
    page: Any, folder: Path, tiny_model: Any, shared: dict[str, Any]
) -> None:
    model = tiny_model("llama")
    output_dir = folder / "saves" / "first"
    set_up_run(page, model, output_dir, max_steps=4, save_steps=100)
    # the template is suggested from the tokenizer, with its proof
    wait_text(page, "#train-template-status textarea", "smollm2 (official)")
    # preview: samples as the model sees them, trained text marked
    page.click("#train-preview")
    page.wait_for_selector("#train-preview-box mark.trained")
    assert "<|im_start|>assistant" in page.locator("#train-preview-box pre.sample").first.inner_text()
    assert page.locator("#train-preview-box pre.sample").count() == 3

    page.click("#train-start")
    wait_text(page, "#train-status textarea", "Started job")
    # a step of the tiny model can take 0.2 s: the page may first see any step of the 4
    wait_text(page, "#train-progress", "/4", RUN_TIMEOUT_MS)
    # the loss plot draws the points so far
    page.wait_for_selector("#train-loss-plot canvas, #train-loss-plot svg .mark-line")
    shot = screenshot(page, folder, "train_running")
    if README_SHOT:
        shutil.copy(shot, README_SHOT)
    wait_text(page, "#train-progress", "finished · step", RUN_TIMEOUT_MS)
    assert "step 4/4" in page.locator("#train-progress").inner_text()
    assert (output_dir / "adapter_model.safetensors").is_file()
    assert (output_dir / "adapter_config.json").is_file()
    screenshot(page, folder, "train_finished")
    shared["adapter"] = output_dir


def test_reload_reattaches_to_the_job(page: Any, server: str, shared: dict[str, Any]) -> None:
    page.goto(server)
    wait_text(page, "#train-progress", "finished")
    assert str(shared["adapter"]) in page.locator("#train-progress").inner_text()


def test_stop_mid_run_saves_a_checkpoint(page: Any, folder: Path, tiny_model: Any) -> None:
    output_dir = folder / "saves" / "halted"
    # 500 steps take minutes; Stop lands after a few, and save_steps is past the end, so only
    # the SIGTERM path can write the checkpoint
    set_up_run(page, tiny_model("llama"), output_dir, max_steps=500, save_steps=1000)
    page.click("#train-start")
    wait_text(page, "#train-status textarea", str(output_dir))
    # a trained step first: "step 0/?" is the model still loading, before the trainer's handler
    # is installed, when SIGTERM ends the run with nothing to save
    wait_match(page, "#train-progress", "running · step [1-9]", RUN_TIMEOUT_MS)
    page.click("#train-stop")
    wait_text(page, "#train-status textarea", "Stop sent")
    wait_text(page, "#train-progress", "stopped · step", RUN_TIMEOUT_MS)
    checkpoints = sorted(output_dir.glob("checkpoint-*"))
    assert checkpoints, list(output_dir.iterdir())
    assert (checkpoints[-1] / "adapter_model.safetensors").is_file()
    assert f"checkpoint: {checkpoints[-1]}" in page.locator("#train-progress").inner_text()
    (job_folder,) = [
        log.parent
        for log in (folder / "work" / "jobs").glob("*/train.log")
        if str(output_dir) in (log.parent / "config.yaml").read_text()
    ]
    assert "SIGTERM received" in (job_folder / "train.log").read_text()
    # both jobs are listed with their output folders
    page.locator("#train-jobs input").click()
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    assert any(str(output_dir) in text and "stopped" in text for text in options), options


def test_chat_with_the_trained_adapter_streams(
    page: Any, folder: Path, tiny_model: Any, shared: dict[str, Any]
) -> None:
    page.click("#tab-chat-button")
    fill(page, "chat-model", str(tiny_model("llama")))
    fill(page, "chat-adapter", str(shared["adapter"]))
    page.click("#chat-load")
    wait_text(page, "#chat-status textarea", "Loaded", RUN_TIMEOUT_MS)
    # count the chat area's DOM updates: a streamed reply arrives in several
    page.evaluate(
        "() => { window.__updates = 0; new MutationObserver(() => window.__updates++)"
        ".observe(document.querySelector('#chat-history'), {subtree: true, childList: true, characterData: true}); }"
    )
    fill(page, "chat-message", "Who are you?")
    page.click("#chat-send")
    page.wait_for_function(
        "() => { const b = document.querySelectorAll('#chat-history .message.bot, #chat-history [data-testid=bot]');"
        " return b.length && b[b.length - 1].innerText.trim().length > 0; }",
        timeout=RUN_TIMEOUT_MS,
    )
    page.wait_for_function(
        "() => !document.querySelector('#chat-history .pending, #chat-history .generating')"
    )
    assert page.evaluate("() => window.__updates") > 2
    screenshot(page, folder, "chat")
    page.click("#chat-clear")
    page.wait_for_function("() => !document.querySelector('#chat-history [data-testid=bot]')")


def test_export_merges_the_adapter(page: Any, folder: Path, tiny_model: Any, shared: dict[str, Any]) -> None:
    page.click("#tab-export-button")
    target = folder / "merged"
    fill(page, "export-model", str(tiny_model("llama")))
    fill(page, "export-adapter", str(shared["adapter"]))
    fill(page, "export-dir", str(target))
    page.click("#export-run")
    wait_text(page, "#export-status textarea", "Wrote", RUN_TIMEOUT_MS)
    assert (target / "config.json").is_file()
    assert any(target.glob("*.safetensors"))
    screenshot(page, folder, "export")


def test_language_switch_relabels_the_page(page: Any, folder: Path) -> None:
    page.get_by_label("中文").check()
    page.wait_for_selector("text=合并并导出")
    page.click("#tab-train-button")
    page.wait_for_selector("text=开始训练")
    # the job's state is ours to translate too (the stopped job is the one picked)
    wait_match(page, "#train-progress", "(已停止|已完成) · 步数 \\d+/")
    screenshot(page, folder, "train_zh")
    page.get_by_label("English").check()
    page.wait_for_selector("text=Merge and export", state="attached")
