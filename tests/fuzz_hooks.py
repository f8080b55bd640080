"""Schemathesis hooks for tests/test_serve_fuzz.py: aim generated bodies at the served model.

Without them nearly every request names a random model and stops at the 404; with them the
fuzzer reaches prompt encoding, sampling and generation. Lengths are capped so a run stays short.
"""

from __future__ import annotations

from typing import Any

import schemathesis

MODEL = "tiny-fuzz"
CAPS = {"max_tokens": 6, "max_completion_tokens": 6, "n": 3}


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if isinstance(body, dict):
        body["model"] = MODEL
        for key, cap in CAPS.items():
            value = body.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > cap:
                body[key] = cap
    return body
