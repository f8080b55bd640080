"""List the lmforge source files whose functions a training run calls, in the order each is first entered.

    python tools/trace_path.py examples/train_lora/tiny_cpu_lora_sft.yaml model_name_or_path=... max_steps=1
    python tools/trace_path.py --serve examples/inference/tiny_cpu_lora_sft.yaml model_name_or_path=...

With ``--serve`` it builds the API app from the config instead and traces one chat-completion
request (through FastAPI's test client), from the moment the server is up.

Used to count the files on a training sample's path (docs/architecture.md). The dataset cache
is switched off so that reading and encoding run; the run is in this process.
"""

from __future__ import annotations

import inspect
import sys
import threading
from pathlib import Path

import lmforge

ROOT = Path(lmforge.__file__).resolve().parent


def main(argv: list[str]) -> int:
    from lmforge.cli.train import main as train

    if argv[:1] == ["--serve"]:
        return serve(argv[1:])
    order: dict[str, int] = {}

    def profile(frame, event, arg):  # noqa: ANN001 - sys.setprofile's signature
        # functions run, not module or class bodies executed at import (those lack CO_OPTIMIZED)
        if event == "call" and frame.f_code.co_flags & inspect.CO_OPTIMIZED:
            name = frame.f_code.co_filename
            if name not in order and name.startswith(str(ROOT)):
                order[name] = len(order)

    sys.setprofile(profile)
    try:
        code = train([*argv, "overwrite_cache=true", "preprocessing_num_workers=1"])
    finally:
        sys.setprofile(None)
    for name in order:
        print(Path(name).relative_to(ROOT.parent))
    return code


def serve(argv: list[str]) -> int:
    from fastapi.testclient import TestClient

    from lmforge.cli.api import build_app
    from lmforge.config import load_config

    order: dict[str, int] = {}
    active = threading.Event()  # record only while the request is in flight, in every thread

    def profile(frame, event, arg):  # noqa: ANN001 - sys.setprofile's signature
        if active.is_set() and event == "call" and frame.f_code.co_flags & inspect.CO_OPTIMIZED:
            name = frame.f_code.co_filename
            if name not in order and name.startswith(str(ROOT)):
                order[name] = len(order)

    threading.setprofile(profile)  # the app and the engine run in threads of their own
    sys.setprofile(profile)
    app, _service, _env = build_app(load_config(argv))
    with TestClient(app) as client:
        model = client.get("/v1/models").json()["data"][0]["id"]
        active.set()
        reply = client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        )
        active.clear()
    sys.setprofile(None)
    for name in order:
        print(Path(name).relative_to(ROOT.parent))
    return 0 if reply.status_code == 200 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
