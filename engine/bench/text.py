"""Figures as text for results.md: numbers with separators, ratios, the
spread of a row's runs, Markdown tables (pure)."""

import math
import statistics

__all__ = ["num", "ratio", "spread", "table", "share"]


def num(value, digits=3) -> str:
    """A figure with ``digits`` significant digits and thousands
    separators; '—' when not measured."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    mag = math.floor(math.log10(abs(value)))
    places = max(0, digits - 1 - mag)
    return f"{value:,.{places}f}"


def ratio(a, b) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}x"


def spread(runs: list) -> str:
    """The median of ``runs``, with their min–max in brackets when more
    than one; '—' for none."""
    if not runs:
        return "—"
    mid = statistics.median(runs)
    if len(runs) == 1:
        return num(mid)
    return f"{num(mid)} ({num(min(runs))}–{num(max(runs))})"


def table(header, rows) -> list:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 else "---:"
                          for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def share(value) -> str:
    """A share of a window (0.42) as a percentage ("42%"); '—' when not
    measured."""
    if value is None:
        return "—"
    return f"{100 * value:.0f}%"
