"""Profiles of shards merged into one: the reduce step after a ``map_task`` that profiles shards.

whylogs profiles are mergeable sketches: merging the profiles of the shards gives the profile of
all the data, exactly for counts, nulls, types, min and max, and within the sketches' error bounds
for quantiles (KLL) and distinct counts (HyperLogLog). Importing this module imports no whylogs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from whylogs.core import DatasetProfileView

__all__ = ["merge_profiles"]

_ACCEPTED = "an iterable of whylogs DatasetProfileView (for example the list a map task returns)"


def merge_profiles(profiles: Iterable[DatasetProfileView]) -> DatasetProfileView:
    """One profile of all the data the ``profiles`` were made from (whylogs' merge, in order).

    Typically the reduce task after a ``map_task`` whose elements each return the
    ``DatasetProfileView`` of one shard. To judge constraints and drift on the merged profile, and to
    get its decks, log the shards' views into a ``whylogs_profile`` block instead
    (``prof.log(view)``): it merges them the same way. An empty iterable gives an empty profile.

    Raises:
        TypeError: ``profiles`` is not an iterable, is a single profile, or holds something other
            than a profile. A ``None`` element (what a map task with ``min_success_ratio`` below 1
            returns for a failed shard) is refused too: the merged profile would silently miss data.
    """
    from ._analysis import DatasetProfileView

    if isinstance(profiles, DatasetProfileView) or not isinstance(profiles, Iterable) or isinstance(profiles, str):
        raise TypeError(f"merge_profiles takes {_ACCEPTED}; got {type(profiles).__name__}")
    merged: DatasetProfileView | None = None
    for index, profile in enumerate(profiles):
        if profile is None:
            raise TypeError(
                f"merge_profiles: profile {index} is None (a map task element that failed?); the merged "
                "profile would miss its data. Leave failed shards out on purpose: "
                "merge_profiles(p for p in profiles if p is not None)"
            )
        if not isinstance(profile, DatasetProfileView):
            raise TypeError(f"merge_profiles takes {_ACCEPTED}; profile {index} is {type(profile).__name__}")
        merged = profile if merged is None else merged.merge(profile)
    return merged if merged is not None else DatasetProfileView.zero()
