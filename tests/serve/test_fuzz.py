"""Never a bare 500: schemathesis fuzzes every route of a real `lmforge api` from its own OpenAPI spec.

Bodies are generated from the request schemas (valid and invalid), with the model name fixed so
that they reach the engine (tests/serve/fuzz_hooks.py). Any 5xx answer, or a stream that does not end in
[DONE] or goes on after an error event, fails the run; a fixed seed
makes a failure reproducible with the command the fuzzer prints.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers.serving import QWEN_SERVER_NAME
from tests.serve.fuzz_hooks import MODEL

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def server(qwen_server):
    """The session's shared server (tests/helpers/serving.py), both backends; the hooks aim at its name."""
    assert MODEL == QWEN_SERVER_NAME, "tests/serve/fuzz_hooks.py must name the shared server's model"
    return qwen_server


def test_no_request_gets_a_server_error(server, tmp_path):
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is a dev dependency (pip install -e '.[dev]')"
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "fuzz_hooks",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    # schemathesis stops reading a stream after 20 events by default: room for the longest one here
    settings = tmp_path / "schemathesis.toml"
    settings.write_text("max-stream-events = 100\n")
    command = [
        cli, "--config-file", str(settings), "run", f"{server.root}/openapi.json",
        "--checks", "not_a_server_error,stream_ends_well",
        "--max-examples", "150", "--seed", "20261129", "--workers", "1",
        "--request-timeout", "60", "--generation-database", "none",
    ]  # fmt: skip
    before = httpx.get(f"{server.root}/health").json()
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert "generated" in report and " passed" in report
    after = httpx.get(f"{server.root}/health").json()
    generated = after["tokens_generated"] - before["tokens_generated"]
    assert generated >= 100, (
        f"the fuzzed requests reached the model too rarely ({generated} tokens):\n{report}"
    )
