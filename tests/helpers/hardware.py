"""Faked CPU reports (``torch.cpu.get_capabilities()``), to see both answers of the bf16 detection."""

from __future__ import annotations

from typing import Any

import pytest

from lmforge.config import hardware

CAPABLE = {"cpu_name": "Fake Xeon", "amx_bf16": True, "avx512_bf16": True, "avx2": True}
INCAPABLE = {"cpu_name": "Fake EPYC", "amx_bf16": False, "avx512_bf16": False, "avx2": True}


def fake_cpu_report(monkeypatch: pytest.MonkeyPatch, report: dict[str, Any]) -> None:
    """Make lmforge read ``report`` as this CPU's instruction sets."""
    monkeypatch.setattr(hardware, "cpu_features", lambda: report)
