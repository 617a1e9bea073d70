"""What a whylogs profile says, as plain data: the decks, the handle and the trackers read these."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ColumnSummary", "ConstraintResult", "DriftResult"]


@dataclass(frozen=True)
class ColumnSummary:
    """One column of a profile: what a user checks first."""

    column: str
    type: str
    count: int
    null_count: int
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    cardinality: float | None = None


@dataclass(frozen=True)
class DriftResult:
    """The drift of one column between the reference and the target profile."""

    column: str
    algorithm: str | None
    statistic: float | None
    pvalue: float | None
    category: str | None


@dataclass(frozen=True)
class ConstraintResult:
    """One constraint's outcome on a profile."""

    name: str
    passed: bool
    detail: str | None = None
