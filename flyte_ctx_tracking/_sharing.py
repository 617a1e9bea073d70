"""Which run a tracking session writes to: its run mode and rank scope, decided once at open.

A task's tracking session can open a run of its own (``run_mode="new"``), write into one run the
whole execution shares (``"shared"``), or open a child of the execution's parent run
(``"nested"``). In distributed training its ``rank_scope`` says whose run it is: the job's
(``"global"``), its worker's (``"worker"``, one run per node by torch elastic's ``GROUP_RANK``), or
its rank's own (``"rank"``). Everything here is pure: identities are derived from the execution
context alone, so every process of an execution (every pod, every rank, every retry) derives the
same one without talking to the others.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, get_args

from ._context import ExecutionContext

__all__ = [
    "RANK_SCOPES",
    "RUN_MODES",
    "RankScope",
    "RunMode",
    "Sharing",
    "decide_sharing",
    "scope_suffix",
    "shared_base",
    "sharing_note",
]

RunMode = Literal["auto", "new", "shared", "nested"]
RankScope = Literal["global", "worker", "rank"]
RUN_MODES: tuple[str, ...] = get_args(RunMode)
RANK_SCOPES: tuple[str, ...] = get_args(RankScope)
# torch elastic's id of a local job (torchrun --rdzv-id); "none" is torchrun's placeholder.
_ELASTIC_RUN_ID = "TORCHELASTIC_RUN_ID"


@dataclass(frozen=True)
class Sharing:
    """How the run of one session is shared, as decided when it opened.

    Attributes:
        run_mode: what the session does: ``"new"``, ``"shared"`` or ``"nested"`` (never ``"auto"``).
        rank_scope: ``"global"``, ``"worker"`` or ``"rank"``.
        requested: the run mode asked for (``"auto"`` included), to explain a fallback.
        shared_id: the identity every writer of a shared run, or every child of a nested one's
            parent, derives alike (``None`` for a new run).
        shared_by: who writes into the run, in words, for the deck ("every task and rank of
            execution f3a..."), or None for a run of this writer's own.
        writer: this process in words ("task train, rank 3"), a label the backends can record.
        primary: this writer owns the run's lifecycle (the scope's rank 0; every writer of a
            fallen-back shared run, each owning its own): backends that let several writers share
            a run let only the primary mark it finished.
        opens: whether this process opens a run at all (the other ranks of a scope run untracked).
        fallback: why the run mode is not the one asked for, if it is not (one warning says it).
    """

    run_mode: str = "new"
    rank_scope: str = "global"
    requested: str = "auto"
    shared_id: str | None = None
    shared_by: str | None = None
    suffix: str = ""
    """What this writer appends to an id the user chose (``id=``, ``experiment_key=``) so that the
    runs of a scope stay apart: ``-worker<N>`` or ``-rank<N>``, else ""."""
    writer: str = ""
    primary: bool = True
    opens: bool = True
    fallback: str | None = None


def shared_base(context: ExecutionContext) -> str:
    """What every task of one execution has in common: the execution's name in a pod.

    Locally, flytekit runs a workflow's tasks in one process, so the process stands for the
    execution; torch elastic's run id (``torchrun --rdzv-id``) joins the processes of a local job.
    Without one (plain ``torchrun --nproc-per-node=4``, whose run id is ``"none"``), the ranks of a
    local job are the children of one launcher: its process id joins them.
    """
    if context.is_remote and context.execution_name:
        return context.execution_name
    elastic = (os.environ.get(_ELASTIC_RUN_ID) or "").strip()
    if elastic and elastic != "none":
        return f"local-{elastic}"
    process = os.getppid() if context.is_distributed else os.getpid()
    return f"local-{socket.gethostname()}-{process}{_started(process)}"


def _started(pid: int) -> str:
    """``-<start time>`` of process ``pid`` where the system tells it (Linux), else "": a process id
    is reused after its process ends, and a later local run must not join an old run in a local
    store that outlives it (MLflow's finds shared runs by this identity)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            # Field 22 (clock ticks since boot); the command name before it may hold spaces.
            return "-" + stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError, ValueError):
        return ""


def scope_suffix(context: ExecutionContext, scope: str) -> str:
    """What tells the runs of one scope apart in a distributed job: ``-worker<GROUP_RANK>`` or
    ``-rank<RANK>`` ("" for the job's one run, and outside distributed training).

    No dash comes before the number, so a suffixed identity never equals another pod's name (a
    training operator names replicas ``...-worker-1``).
    """
    if not context.is_distributed or scope == "global":
        return ""
    return f"-worker{context.group_rank}" if scope == "worker" else f"-rank{context.rank}"


def _opens(context: ExecutionContext, run_mode: str, scope: str) -> bool:
    """Whether this rank opens a run: every writer of a shared run, else each scope's rank 0."""
    if not context.is_distributed or run_mode == "shared" or scope == "rank":
        return True
    if scope == "worker":
        return context.local_rank == 0
    return context.rank == 0


def _writer(context: ExecutionContext, function: str | None) -> str:
    task = (context.task_name or function or "").rsplit(".", 1)[-1]
    parts = [f"task {task}" if task else "a block"]
    if context.map_index is not None:
        parts.append(f"map element {context.map_index}")
    if context.is_distributed:
        parts.append(f"rank {context.rank} (worker {context.group_rank}, local rank {context.local_rank})")
    return ", ".join(parts)


def decide_sharing(
    context: ExecutionContext,
    *,
    requested: str,
    rank_scope: str,
    auto: str,
    supported: Collection[str],
    function: str | None = None,
) -> tuple[Sharing, str | None]:
    """How this process writes: its :class:`Sharing`, and the run identity it derives.

    Args:
        context: the execution context of the open.
        requested: the run mode asked for (``"auto"`` included).
        rank_scope: the scope asked for.
        auto: what ``"auto"`` means for the backend.
        supported: the run modes the backend can do in the mode it opens in (online or offline).
        function: the decorated function, naming the writer locally.
    """
    run_mode = auto if requested == "auto" else requested
    fallback: str | None = None
    per_writer = False
    if run_mode not in supported:
        fallback = f"run_mode={run_mode!r} is not possible here"
        # A shared run's writers each keep a run of their own, found together by the shared identity.
        per_writer = run_mode == "shared"
        run_mode = "new"
    shared_id: str | None = None
    shared_by: str | None = None
    base = shared_base(context)
    if run_mode == "shared":
        suffix = scope_suffix(context, rank_scope)
        shared_id = base + suffix
        shared_by = _shared_by(context, rank_scope, base)
        identity: str | None = shared_id
    else:
        # A new run's identity is the pod name in a pod (flytekitplugins' run id: a retry is a run of
        # its own), None locally (the backend makes a fresh one); a worker's or rank's run adds its number.
        suffix = scope_suffix(context, "rank" if per_writer else rank_scope)
        pod = context.run_identity()
        identity = pod + suffix if pod is not None else None
        if run_mode == "nested" or per_writer:
            shared_id = base
    sharing = Sharing(
        run_mode=run_mode,
        rank_scope=rank_scope,
        requested=requested,
        shared_id=shared_id,
        shared_by=shared_by,
        suffix=suffix,
        writer=_writer(context, function),
        # A fallen-back shared run's writers each own the run they open: each of them finishes it.
        primary=True if per_writer else _is_primary(context, rank_scope),
        opens=True if per_writer else _opens(context, run_mode, rank_scope),
        fallback=fallback,
    )
    return sharing, identity


def _shared_by(context: ExecutionContext, scope: str, base: str) -> str:
    what = f"execution {base}" if context.is_remote else f"local run {base}"
    if not context.is_distributed or scope == "global":
        return f"every task and rank of {what}"
    if scope == "worker":
        return f"every task's ranks on worker {context.group_rank} of {what}"
    return f"every task's rank {context.rank} of {what}"


def _is_primary(context: ExecutionContext, scope: str) -> bool:
    if scope == "worker":
        return context.local_rank == 0
    if scope == "rank":
        return True
    return context.rank == 0


def sharing_note(sharing: Sharing) -> str | None:
    """What a run's deck says about who else writes into it, or None for a run of this writer's own."""
    if sharing.run_mode == "shared":
        return (
            f"A shared run (run_mode='shared'): written by {sharing.shared_by}. "
            f"This part was written by {sharing.writer}."
        )
    if sharing.shared_id is None:
        return None
    if sharing.run_mode == "nested":
        return f"One of the runs of {sharing.shared_id} (run_mode='nested'); this one was written by {sharing.writer}."
    return (
        f"One of the runs of {sharing.shared_id}: run_mode='shared' was not possible here, so each writer has a "
        f"run of its own; this one was written by {sharing.writer}."
    )
