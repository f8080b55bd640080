"""Schemathesis hooks for tests/serve/test_fuzz.py: aim generated bodies at the served model.

Without them nearly every request names a random model and stops at the 404; with them the
fuzzer reaches prompt encoding, sampling and generation. Lengths are capped so a run stays short.
The check `stream_ends_well` holds every answered stream to its promise: it ends in ``[DONE]``, and
an error inside it is only ever its last event.
"""

from __future__ import annotations

import itertools
from typing import Any

import schemathesis

MODEL = "tiny-qwen"  # the name of the shared server it fuzzes (QWEN_SERVER_NAME in tests/helpers/serving.py)
CAPS = {"max_tokens": 6, "max_completion_tokens": 6, "n": 3}


_bodies = itertools.count()


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if isinstance(body, dict):
        body["model"] = MODEL
        body["stream"] = next(_bodies) % 2 == 1  # every other request streams (generated ones rarely do)
        for key, cap in CAPS.items():
            value = body.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > cap:
                body[key] = cap
    return body


@schemathesis.check
def stream_ends_well(context: Any, response: Any, case: Any) -> bool | None:
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    if response.status_code != 200 or "text/event-stream" not in content_type:
        return None
    events = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    if not events or events[-1] != "[DONE]":
        raise AssertionError(f"the stream did not end with [DONE]: ...{response.text[-300:]!r}")
    for event in events[:-2]:
        if event.startswith('{"error"'):
            raise AssertionError(f"the stream went on after an error event: {event[:300]}")
    return True
