"""Metrics as an aligned table, in the manner of ``lmforge data stats``: one name and value a row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def metrics_table(metrics: Mapping[str, Any], title: str = "") -> str:
    """``name  value`` rows; floats with 4 decimals, missing values as ``-``."""
    rows = [(name, _cell(value)) for name, value in metrics.items()]
    return grid(["metric", "value"], rows, title)


def grid(header: Sequence[str], rows: Sequence[Sequence[str]], title: str = "") -> str:
    """Numbers right-aligned, text left-aligned, widths fitted to the content."""
    table = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    numeric = [all(_is_number(row[i]) for row in table[1:]) for i in range(len(header))]
    lines = [title] if title else []
    for number, row in enumerate(table):
        cells = [
            cell.rjust(w) if right and i else cell.ljust(w)
            for i, (cell, w, right) in enumerate(zip(row, widths, numeric, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return cell == "-"
    return True
