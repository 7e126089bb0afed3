"""A benchmark number with its bootstrap interval and how many items it rests on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Score:
    """One reported number: `value` with its 95 % bootstrap interval `ci` over `count` items."""

    value: float
    ci: tuple[float, float] | None = None
    """Percentile-bootstrap 95 % interval, or None when no bootstrap was run."""
    count: int = 0
    """Examples, pairs, texts or tests the value is computed from."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "ci": list(self.ci) if self.ci is not None else None,
            "count": self.count,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Score:
        ci = data.get("ci")
        return cls(
            value=float(data["value"]), ci=tuple(ci) if ci is not None else None, count=int(data["count"])
        )


ScoreTable = dict[str, dict[str, Score]]
"""group (a bias type or "overall") -> metric name -> Score."""


def table_to_dict(table: ScoreTable) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        group: {name: score.to_dict() for name, score in metrics.items()} for group, metrics in table.items()
    }


def table_from_dict(data: dict[str, dict[str, dict[str, Any]]]) -> ScoreTable:
    return {
        group: {name: Score.from_dict(s) for name, s in metrics.items()} for group, metrics in data.items()
    }
