"""The memray integration (not implemented yet)."""

from .._placeholder import not_implemented

memray_profile = not_implemented("memray_profile")
memray_profiling = not_implemented("memray_profiling")
