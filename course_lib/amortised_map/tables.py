"""Result tables as Markdown (the notebooks display them with ``IPython.display.Markdown``)."""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["markdown_table"]


def _cell(value, digits: int) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value != 0 and (abs(value) < 10 ** (-digits) or abs(value) >= 1e6):
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Mapping[str, Mapping[str, object]], *, first: str = "method", digits: int = 3) -> str:
    """``{row name: {column: value}}`` as a Markdown table; columns in order of first appearance."""
    if not rows:
        raise ValueError("markdown_table needs at least one row")
    columns: list[str] = []
    for row in rows.values():
        columns += [c for c in row if c not in columns]
    lines = ["| " + " | ".join([first, *columns]) + " |", "|" + "---|" * (len(columns) + 1)]
    for name, row in rows.items():
        cells = [_cell(row.get(c, ""), digits) for c in columns]
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines)
