"""whylogs objects in, plain data and HTML out: what the whylogs decks, renderers and trackers show.

Private. Imported only once whylogs is needed; it imports whylogs after the numpy-2 step.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._compat import import_whylogs, prepare_whylogs

why = import_whylogs()  # the numpy-2 step runs before whylogs is imported

from whylogs.core import DatasetProfile, DatasetProfileView  # noqa: E402
from whylogs.core.constraints import (  # noqa: E402
    Constraints,
    ConstraintsBuilder,
    DatasetComparisonConstraint,
    DatasetConstraint,
    MetricConstraint,
)

from ._types import ColumnSummary, ConstraintResult, DriftResult  # noqa: E402

__all__ = [
    "CONSTRAINT_TYPES",
    "Constraints",
    "DatasetProfile",
    "DatasetProfileView",
    "column_summaries",
    "drift_results",
    "evaluate_constraints",
    "interactive_constraints_html",
    "interactive_drift_html",
    "interactive_summary_html",
    "profile_dataframe",
    "rows_in",
    "tracker_metrics",
    "view_of",
]

CONSTRAINT_TYPES: tuple[type, ...] = (MetricConstraint, DatasetConstraint, DatasetComparisonConstraint)
_TYPES = ("integral", "fractional", "boolean", "string", "object", "tensor")


def profile_dataframe(frame: Any) -> DatasetProfileView:
    """Profile a whole DataFrame (what ``why.log(frame).view()`` gives)."""
    prepare_whylogs()
    profile = DatasetProfile()
    profile.track(pandas=frame)
    return profile.view()


def view_of(data: Any) -> DatasetProfileView:
    """A ``DatasetProfileView`` as it is, or the profile of a DataFrame."""
    return data if isinstance(data, DatasetProfileView) else profile_dataframe(data)


def rows_in(view: DatasetProfileView) -> int:
    """The rows a profile was made from: the largest value count of its columns (nulls included)."""
    counts = (column.get_metric("counts") for column in view.get_columns().values())
    return max((int(metric.n.value) for metric in counts if metric is not None), default=0)


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _int(value: Any) -> int:
    number = _float(value)
    return int(number) if number is not None else 0


def column_summaries(view: DatasetProfileView) -> list[ColumnSummary]:
    """One :class:`ColumnSummary` per column: inferred type, counts, nulls, and mean/min/max when numeric."""
    frame = view.to_pandas()
    summaries = []
    for column, row in frame.iterrows():
        stats: Mapping[str, Any] = row.to_dict()
        by_count = sorted(((_int(stats.get(f"types/{t}")), t) for t in _TYPES), reverse=True)
        kinds = [t for count, t in by_count if count > 0]
        numeric = _int(stats.get("distribution/n")) > 0
        summaries.append(
            ColumnSummary(
                column=str(column),
                type="/".join(kinds) if kinds else "null",
                count=_int(stats.get("counts/n")),
                null_count=_int(stats.get("counts/null")),
                mean=_float(stats.get("distribution/mean")) if numeric else None,
                min=_float(stats.get("distribution/min")) if numeric else None,
                max=_float(stats.get("distribution/max")) if numeric else None,
                cardinality=_float(stats.get("cardinality/est")),
            )
        )
    return summaries


def tracker_metrics(name: str, summaries: Sequence[ColumnSummary]) -> dict[str, float | int]:
    """The flat metrics logged to an active tracker: ``whylogs/<name>/<column>/<stat>``."""
    metrics: dict[str, float | int] = {}
    for summary in summaries:
        prefix = f"whylogs/{name}/{summary.column}"
        metrics[f"{prefix}/count"] = summary.count
        metrics[f"{prefix}/null_count"] = summary.null_count
        for stat in ("mean", "min", "max"):
            value = getattr(summary, stat)
            if value is not None and math.isfinite(value):
                metrics[f"{prefix}/{stat}"] = value
    return metrics


def drift_results(
    target: DatasetProfileView, reference: DatasetProfileView
) -> tuple[list[DriftResult], list[str], list[str]]:
    """Per-column drift of ``target`` against ``reference`` (KS for numbers, chi-square for the rest),
    then the columns found only in the reference and only in the target."""
    from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores

    target_columns = set(target.get_columns())
    reference_columns = set(reference.get_columns())
    scores = calculate_drift_scores(target_view=target, reference_view=reference, with_thresholds=True)
    results = []
    for column in sorted(target_columns & reference_columns):
        score = scores.get(column) or {}
        results.append(
            DriftResult(
                column=column,
                algorithm=score.get("algorithm"),
                statistic=_float(score.get("statistic")),
                pvalue=_float(score.get("pvalue")),
                category=score.get("drift_category"),
            )
        )
    return results, sorted(reference_columns - target_columns), sorted(target_columns - reference_columns)


def _detail(summary: Mapping[str, Any] | None) -> str | None:
    if not summary:
        return None
    skip = {"metric"} | {key for key in summary if key.startswith("q_")}
    values = ", ".join(
        f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in summary.items()
        if key not in skip
    )
    return f"{summary.get('metric', '')}: {values}".strip(": ")


def _missing_column(constraint: Any, view: DatasetProfileView) -> str | None:
    """The column a metric constraint names when it is not in the profile (whylogs would pass it)."""
    if not isinstance(constraint, MetricConstraint):
        return None
    selector = constraint.metric_selector
    column = selector.column_name
    if column is None or selector.metrics_resolver is not None or view.get_column(column) is not None:
        return None
    return str(column)


def evaluate_constraints(
    spec: Callable[[DatasetProfileView], Constraints] | Sequence[Any] | Constraints,
    view: DatasetProfileView,
    reference: DatasetProfileView | None = None,
) -> tuple[list[ConstraintResult], Constraints]:
    """Evaluate ``spec`` (a callable view -> ``Constraints``, a list of whylogs constraints, or a
    ``Constraints``) on ``view``. A constraint on a column that was never logged fails."""
    missing: list[ConstraintResult] = []
    if isinstance(spec, Constraints):
        constraints = copy.copy(spec)
        constraints.dataset_profile_view = view
    elif callable(spec):
        constraints = spec(view)
        if not isinstance(constraints, Constraints):
            raise TypeError(
                f"the constraints callable returned {type(constraints).__name__}; it must return whylogs "
                "Constraints (ConstraintsBuilder(view).add_constraint(...).build())"
            )
    else:
        built = Constraints(dataset_profile_view=view)
        builder = ConstraintsBuilder(dataset_profile_view=view, constraints=built, reference_profile_view=reference)
        for constraint in spec:
            column = _missing_column(constraint, view)
            if column is not None:
                detail = f"column {column!r} was not logged"
                missing.append(ConstraintResult(name=str(constraint.name), passed=False, detail=detail))
                continue
            builder.add_constraint(constraint)
        # Not builder.build(): it deep-copies the views too, and whylogs copies a view by serializing
        # it through a temporary file, so on a full or read-only disk the data could not be judged.
        # The constraints are copied (their conditions keep state while evaluated); the views shared.
        shared: dict[int, Any] = {id(v): v for v in (view, reference) if v is not None}
        constraints = copy.deepcopy(built, shared)
    report = constraints.generate_constraints_report(with_summary=True)
    results = [
        ConstraintResult(name=str(r.name), passed=bool(r.passed) and not r.failed, detail=_detail(r.summary))
        for r in report
    ]
    return results + missing, constraints


def _report_html(report: Any) -> str:
    return str(getattr(report, "data", report))


def interactive_summary_html(view: DatasetProfileView) -> str:
    """whylogs' interactive profile summary report (needs internet access to render)."""
    from whylogs.viz.extensions.reports.profile_summary import ProfileSummaryReport

    return _report_html(ProfileSummaryReport(target_view=view).report())


def interactive_drift_html(target: DatasetProfileView, reference: DatasetProfileView) -> str:
    """whylogs' interactive summary drift report (needs internet access to render)."""
    from whylogs.viz import NotebookProfileVisualizer

    viz = NotebookProfileVisualizer()
    viz.set_profiles(target_profile_view=target, reference_profile_view=reference)
    return _report_html(viz.summary_drift_report())


def interactive_constraints_html(constraints: Constraints) -> str:
    """whylogs' interactive constraints report (needs internet access to render)."""
    from whylogs.viz import NotebookProfileVisualizer

    return _report_html(NotebookProfileVisualizer().constraints_report(constraints=constraints))
