"""The ``flyte/...`` fields a tracker records about its run, written once for every backend.

A run of its own has them at the top. A shared run (``run_mode="shared"``) has several writers, so
only what every writer has alike stays at the top (the execution, how the run is shared), and each
writer's own fields (its pod, task, attempt, ranks) go under ``flyte/writers/<writer>/``, where no
other writer overwrites them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._validate import file_stem

if TYPE_CHECKING:
    from ._session import OpenPlan

__all__ = ["EXECUTION_WIDE", "flyte_fields", "writer_label", "writer_prefix"]

EXECUTION_WIDE = frozenset({"flyte/project", "flyte/domain", "flyte/name", "flyte/execution_url"})
"""The fields every writer of an execution has alike."""


def writer_label(plan: OpenPlan) -> str:
    """What tells one writer of a shared run from the others: its pod's name (with its rank in
    distributed training); locally, the task or function and rank, in words made safe."""
    return plan.context.run_identity(per_rank=True) or file_stem(plan.sharing.writer, "writer")


def writer_prefix(plan: OpenPlan) -> str:
    """Where this writer's own fields go: ``flyte/writers/<writer>/`` in a shared run, else ``flyte/``."""
    return f"flyte/writers/{writer_label(plan)}/" if plan.sharing.run_mode == "shared" else "flyte/"


def flyte_fields(plan: OpenPlan, common: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every ``flyte/...`` field of this writer: the execution's metadata, its attempt, node, map
    index and ranks, and how the run is shared, placed by :func:`writer_prefix`.

    Args:
        plan: the open's plan.
        common: the backend's own fields every writer has alike (kept at the top).
    """
    context, sharing = plan.context, plan.sharing
    mine: dict[str, Any] = dict(context.flyte_metadata())
    if plan.function and "flyte/task/name" not in mine:  # a decorated function, outside Flyte
        mine["flyte/task/name"] = plan.function
    if context.is_remote:
        mine["flyte/attempt"] = context.attempt
        if plan.group is not None:
            mine["flyte/group"] = plan.group  # what a node's retries have in common
    if context.map_index is not None:
        mine["flyte/map_index"] = context.map_index
    if context.is_distributed:
        mine.update(
            {
                "flyte/rank": context.rank,
                "flyte/local_rank": context.local_rank,
                "flyte/group_rank": context.group_rank,
                "flyte/world_size": context.world_size,
            }
        )
    fields: dict[str, Any] = {**(common or {}), "flyte/run_mode": sharing.run_mode}
    if context.is_distributed:
        fields["flyte/rank_scope"] = sharing.rank_scope
    if sharing.shared_id is not None:
        fields["flyte/shared_id"] = sharing.shared_id  # the runs of one fallen-back shared run, together
    prefix = writer_prefix(plan)
    for name, value in mine.items():
        fields[name if name in EXECUTION_WIDE else prefix + name.removeprefix("flyte/")] = value
    return fields
