"""API key, overload and client disconnects, against a real `lmforge api` process with tight limits."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import openai
import pytest

KEY = "sk-test-7f3a"
LONG = 2000  # tokens: far more than the tests wait for, so generation only stops if cancelled


@pytest.fixture(scope="module")
def server(api_server, tiny_model):
    settings = {
        "model_name_or_path": str(tiny_model("llama")),
        "template": "qwen",
        "do_sample": False,
        "max_concurrent_requests": 1,
        "max_queued_requests": 1,
    }
    with api_server(settings, env={"API_KEY": KEY, "API_MODEL_NAME": "tiny"}) as srv:
        yield srv


def client(server, key=KEY):
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=60)


def health(server):
    return httpx.get(f"{server.root}/health").json()


def wait_idle(server, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = health(server)
        if body["running"] == 0 and body["waiting"] == 0:
            return body
        time.sleep(0.05)
    raise AssertionError(f"server still busy: {health(server)}")


def wait_cancelled(server, count, timeout=10.0):
    """Health once ``count`` requests are cancelled and nothing runs; a slow server may see the
    client's hang-up only after the client has given up waiting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = health(server)
        if body["requests_cancelled"] >= count and body["running"] == 0 and body["waiting"] == 0:
            return body
        time.sleep(0.05)
    raise AssertionError(f"expected {count} cancelled requests and an idle server: {health(server)}")


def body(max_tokens=LONG, stream=True):
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


AUTH = {"Authorization": f"Bearer {KEY}"}


def test_api_key_is_required_and_checked(server):
    with pytest.raises(openai.AuthenticationError) as info:
        client(server, key="wrong").models.list()
    assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
    r = httpx.post(f"{server.url}/chat/completions", json=body(3, False))
    assert r.status_code == 401 and "missing API key" in r.json()["error"]["message"]
    r = httpx.get(f"{server.url}/models", headers={"Authorization": f"Basic {KEY}"})
    assert r.status_code == 401
    assert client(server).chat.completions.create(**body(3, False)).usage.completion_tokens == 3
    assert httpx.get(f"{server.root}/health").status_code == 200  # liveness needs no key


def test_overload_answers_429_and_the_queue_drains(server):
    wait_idle(server)
    first = httpx.Client(headers=AUTH, timeout=60)
    with first.stream("POST", f"{server.url}/chat/completions", json=body()) as running:
        lines = running.iter_lines()
        next(line for line in lines if line.startswith("data:"))  # generating now
        queued_status: list[int] = []

        def queued() -> None:
            r = httpx.post(f"{server.url}/chat/completions", json=body(4, False), headers=AUTH, timeout=60)
            queued_status.append(r.status_code)

        waiter = threading.Thread(target=queued)
        waiter.start()
        deadline = time.monotonic() + 10
        while health(server)["waiting"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert health(server)["waiting"] == 1
        with pytest.raises(openai.RateLimitError) as info:
            client(server).chat.completions.create(**body(4, False))
        assert info.value.status_code == 429 and info.value.response.headers["retry-after"]
        assert "busy" in info.value.body["message"]
    first.close()  # leaving the first stream cancels it, so the queued request runs
    waiter.join(60)
    assert queued_status == [200]
    wait_idle(server)


def test_disconnected_stream_stops_generating(server):
    wait_idle(server)
    before = health(server)
    with (
        httpx.Client(headers=AUTH, timeout=60) as http,
        http.stream("POST", f"{server.url}/chat/completions", json=body()) as r,
    ):
        seen = 0
        for line in r.iter_lines():
            seen += line.startswith("data:")
            if seen >= 5:
                break
    after = wait_cancelled(server, before["requests_cancelled"] + 1)
    generated = after["tokens_generated"] - before["tokens_generated"]
    assert after["requests_cancelled"] == before["requests_cancelled"] + 1
    assert generated < LONG / 2
    time.sleep(0.5)
    assert health(server)["tokens_generated"] == after["tokens_generated"]  # nothing runs on


def test_disconnected_plain_request_stops_generating(server):
    wait_idle(server)
    before = health(server)
    payload = json.dumps(body(stream=False)).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(head + payload)
        deadline = time.monotonic() + 10
        while health(server)["tokens_generated"] == before["tokens_generated"]:  # generating now
            assert time.monotonic() < deadline, f"generation never started: {health(server)}"
            time.sleep(0.01)
    # hung up without reading an answer, whatever the machine's speed
    after = wait_cancelled(server, before["requests_cancelled"] + 1)
    assert after["requests_cancelled"] == before["requests_cancelled"] + 1
    assert after["tokens_generated"] - before["tokens_generated"] < LONG / 2
