"""flytekitplugins-whylogs' renderers: constraints and drift as self-contained HTML."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._session import DEFAULT_NAME, _check_columns, _is_dataframe, _is_profile_view

if TYPE_CHECKING:
    from whylogs.core.constraints import Constraints

__all__ = ["WhylogsConstraintsRenderer", "WhylogsSummaryDriftRenderer"]


class WhylogsConstraintsRenderer:
    """HTML report of whylogs ``Constraints``: each constraint with PASS or FAIL (flytekitplugins-whylogs' name).

    Usable as ``WhylogsConstraintsRenderer.to_html(constraints)`` or as a flytekit renderer.
    """

    @staticmethod
    def to_html(constraints: Constraints, *, interactive: bool = True) -> str:
        """Self-contained HTML of ``constraints`` evaluated on the profile they were built on, then
        (``interactive``) whylogs' own constraints report."""
        from . import _analysis as report

        if not isinstance(constraints, report.Constraints):
            raise TypeError(
                "WhylogsConstraintsRenderer.to_html accepts whylogs Constraints "
                f"(ConstraintsBuilder(view).add_constraint(...).build()); got {type(constraints).__name__}"
            )
        from ...decks.whylogs import constraints_html

        results, _ = report.evaluate_constraints(constraints, constraints.dataset_profile_view)
        extra = report.interactive_constraints_html(constraints) if interactive else None
        return constraints_html(DEFAULT_NAME, results, interactive_html=extra)


class WhylogsSummaryDriftRenderer:
    """HTML drift report of a target against a reference (flytekitplugins-whylogs' name)."""

    @staticmethod
    def to_html(reference_data: Any, target_data: Any, *, interactive: bool = True) -> str:
        """Profile both (pandas DataFrames, or ``DatasetProfileView`` as they are) and report per-column
        drift as self-contained HTML, then (``interactive``) whylogs' own summary drift report."""
        for label, value in (("reference_data", reference_data), ("target_data", target_data)):
            if not (_is_dataframe(value) or _is_profile_view(value)):
                raise TypeError(
                    f"WhylogsSummaryDriftRenderer.to_html: {label} must be a pandas DataFrame or a whylogs "
                    f"DatasetProfileView; got {type(value).__name__}"
                )
            if _is_dataframe(value):
                _check_columns(f"WhylogsSummaryDriftRenderer.to_html: {label}", value)
        from ...decks.whylogs import drift_html
        from . import _analysis as report

        reference, target = report.view_of(reference_data), report.view_of(target_data)
        results, only_reference, only_target = report.drift_results(target, reference)
        extra = report.interactive_drift_html(target, reference) if interactive else None
        return drift_html(
            DEFAULT_NAME, results, only_in_reference=only_reference, only_in_target=only_target, interactive_html=extra
        )
