"""Checks on what a command printed that cannot pass on words appearing somewhere else."""

from __future__ import annotations


def line_with(text: str, *parts: str) -> str:
    """The one line of `text` that holds every part."""
    lines = [line for line in text.splitlines() if all(p in line for p in parts)]
    assert len(lines) == 1, f"expected one line with {parts} in:\n{text}"
    return lines[0]


def columns(text: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    rows = [line.split() for line in text.splitlines() if line.split()[:1] == [first]]
    assert len(rows) == 1, f"expected one row {first!r} in:\n{text}"
    return rows[0]
