"""What `harness bench` writes and prints: each figure with its unit and what it is, the JSON document
(the machine, versions, model, sizes, seeds, command line, each part's figures) and the table."""

from __future__ import annotations

import math

from tabulate import tabulate


def figure(value: float | int | bool, unit: str, what: str) -> dict:
    return {"value": value, "unit": unit, "what": what}


def shown(value) -> str:
    if isinstance(value, bool) or isinstance(value, int) and abs(value) < 10 ** 6:
        return str(value)
    if value == 0 or not math.isfinite(value):
        return str(value)
    if abs(value) >= 10 ** 6 or abs(value) < 10 ** -3:
        return f"{value:.3e}"
    return f"{value:.4g}"


def table(document: dict) -> str:
    """One row a figure, part by part; a part that failed or was left out says why in one row."""
    rows = []
    for part, result in document["parts"].items():
        if "error" in result:
            rows.append([part, "(failed)", result["error"], "", ""])
        for name, f in result.get("figures", {}).items():
            rows.append([part, name, shown(f["value"]), f["unit"], f["what"]])
        for name, why in result.get("unavailable", {}).items():
            rows.append([part, name, "unavailable", "", why])
    return tabulate(rows, ["part", "figure", "value", "unit", "what"], tablefmt="github", disable_numparse=True)
