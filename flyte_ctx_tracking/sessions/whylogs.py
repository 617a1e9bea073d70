"""The whylogs integration (not implemented yet)."""

from .._placeholder import not_implemented

whylogs_profile = not_implemented("whylogs_profile")
WhylogsDatasetProfileTransformer = not_implemented("WhylogsDatasetProfileTransformer")
WhylogsConstraintsRenderer = not_implemented("WhylogsConstraintsRenderer")
WhylogsSummaryDriftRenderer = not_implemented("WhylogsSummaryDriftRenderer")
