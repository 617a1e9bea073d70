"""whylogs: data profiles, drift and constraints of the data a block logs, on numpy 2.

``whylogs_profile`` is the session; the profile type transformer (a Flyte type for
``DatasetProfileView``) and flytekitplugins-whylogs' renderers come with it. Inside:
``_session`` (the session and its handle), ``_analysis`` (whylogs objects to plain data),
``_types`` (that data), ``_merge`` (shards' profiles into one), ``_spark`` (PySpark DataFrames
profiled on the cluster), ``_renderers``, ``_transformer``, ``_plugin`` (flytekit's entry point) and
``_compat`` (the numpy-2 step). The decks' HTML is :mod:`flyte_ctx_tracking.decks.whylogs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._merge import merge_profiles
from ._renderers import WhylogsConstraintsRenderer, WhylogsSummaryDriftRenderer
from ._session import ConstraintsFailedError, WhylogsProfile, WhylogsProfileSession, whylogs_profile
from ._types import ColumnSummary, ConstraintResult, DriftResult

if TYPE_CHECKING:
    from ._transformer import WhylogsDatasetProfileTransformer

__all__ = [
    "ColumnSummary",
    "ConstraintResult",
    "ConstraintsFailedError",
    "DriftResult",
    "WhylogsConstraintsRenderer",
    "WhylogsDatasetProfileTransformer",
    "WhylogsProfile",
    "WhylogsProfileSession",
    "WhylogsSummaryDriftRenderer",
    "merge_profiles",
    "whylogs_profile",
]


def __getattr__(name: str) -> Any:
    # The transformer's module imports whylogs (and registers the type): load it only when asked.
    if name == "WhylogsDatasetProfileTransformer":
        from ._transformer import WhylogsDatasetProfileTransformer

        return WhylogsDatasetProfileTransformer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
