"""memray: profile the memory of just the hot section of a task (or the whole task).

``memray_profile`` is the session (a block, or a function as a decorator); ``memray_profiling`` is
flytekitplugins-memray's task decorator over it. ``_report`` holds the reporter options and the
rendering; the deck's HTML is :mod:`flyte_ctx_tracking.decks.memray`.
"""

from ._session import DEFAULT_MAX_REPORT_BYTES as DEFAULT_MAX_REPORT_BYTES
from ._session import MAX_DECKS_PER_SECTION as MAX_DECKS_PER_SECTION
from ._session import MAX_DECKS_PER_TASK as MAX_DECKS_PER_TASK
from ._session import AllocationSite, MemrayCapture, memray_profile, memray_profiling

__all__ = ["AllocationSite", "MemrayCapture", "memray_profile", "memray_profiling"]
