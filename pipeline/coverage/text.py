"""The coverage summary as text, for the terminal.

Apart from the stage's modules, so that ``roadcover run`` prints the summary without importing
pandas and the rest of the coverage stage (0.7 s at its start).
"""

from __future__ import annotations

from typing import Any


def format_summary(summary: dict[str, Any]) -> str:
    """Return the human table of a coverage summary (for stderr)."""
    rows = [
        ("road km (each road once)", f"{summary['road_km']:,.1f}"),
        ("directed km", f"{summary['directed_km']:,.1f}"),
        ("unique km covered", f"{summary['unique_km']:,.1f}"),
        ("directed km covered", f"{summary['directed_covered_km']:,.1f}"),
        ("total km driven", f"{summary['total_km']:,.1f}"),
        ("coverage", f"{summary['coverage_pct']:.1f} %"),
        ("fresh within 7 / 28 / 90 / 365 days",
         " / ".join(f"{summary[f'fresh_{d}d_pct']:.1f}" for d in (7, 28, 90, 365)) + " %"),
        ("weekly driven km / road km", f"{summary['weekly_driven_ratio']:.2f}"),
        ("share of world roads", f"{summary['percent_of_world']:.6f} %"),
        ("as of", summary["as_of"]),
    ]  # fmt: skip
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)
