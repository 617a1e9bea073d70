"""Where the code runs: one immutable value read from flytekit, else from the pod's environment.

Every session reads the execution context once when it opens. Nothing here may raise on odd
input: a Flyte pod with an unexpected ``HOSTNAME`` or a non-numeric attempt must still run the
user's task, so every parser falls back to a default instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from ._flyte import current_task, local_map_index

__all__ = ["ExecutionContext", "execution_context"]

# Suffixes the training operators append to a pod name: `{exec}-{node}-{attempt}-worker-0`.
_REPLICA_TYPES = frozenset({"worker", "master", "chief", "ps", "evaluator", "launcher", "head"})
# The characters Kubernetes allows in a pod name; anything else in HOSTNAME is not a pod name.
_POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_LOCAL = "local"


def _int(value: str | None, default: int | None) -> int | None:
    """Parse a non-negative integer from the environment, falling back on anything else."""
    if value is None:
        return default
    try:
        number = int(value.strip())
    except ValueError:
        return default
    return number if number >= 0 else default


def _known(value: Any) -> str | None:
    """flytekit fills identifiers with "" or "local" where nothing is known; treat both as unknown."""
    if value is None:
        return None
    text = str(value)
    return text if text and text != _LOCAL else None


@dataclass(frozen=True)
class ExecutionContext:
    """Where the current code runs: a Flyte pod (remote) or a local run, and its identifiers.

    Build it with :func:`execution_context`. Unknown values are ``None``; numbers default to the
    values of a plain single-process local run.
    """

    is_remote: bool = False
    execution_project: str | None = None
    execution_domain: str | None = None
    execution_name: str | None = None
    task_project: str | None = None
    task_domain: str | None = None
    task_name: str | None = None
    task_version: str | None = None
    node_id: str | None = None
    attempt: int = 0
    map_index: int | None = None
    pod_name: str | None = None
    raw_output_prefix: str | None = None
    output_metadata_prefix: str | None = None
    working_directory: str | None = None
    execution_url: str | None = None
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    group_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        """True when more than one process takes part (``WORLD_SIZE > 1``)."""
        return self.world_size > 1

    @property
    def is_rank_zero(self) -> bool:
        """True on the process that owns shared side effects in distributed training."""
        return self.rank == 0

    @property
    def execution_id(self) -> str | None:
        """The task's pod name, as flytekit's tracking plugins and Flyte console links use it.

        When ``HOSTNAME`` is missing it is rebuilt from execution name, node, attempt and map
        index, so that two tasks of one execution never share an identity.
        """
        if self.pod_name:
            return self.pod_name
        if not self.execution_name:
            return None
        parts = [self.execution_name, self._node_label, str(self.attempt)]
        if self.map_index is not None:
            parts.append(str(self.map_index))
        return "-".join(parts)

    @property
    def _node_label(self) -> str:
        # Without a pod name the node id is unknown; the task name still keeps tasks apart.
        if self.node_id:
            return self.node_id
        task = (self.task_name or "").rsplit(".", 1)[-1]
        return re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-") or "n"

    def run_identity(self, *, per_rank: bool = False) -> str | None:
        """The default run identity: the pod name in remote runs, ``None`` locally.

        Locally ``None`` lets the backend generate a fresh id, so repeated local runs never
        collide. With ``per_rank`` (the every-rank opt-in of distributed training), processes that
        share a pod get distinct identities.
        """
        base = self.execution_id if self.is_remote else None
        if base is None or not (per_rank and self.is_distributed):
            return base
        return f"{base}-rank{self.rank}"

    @property
    def group(self) -> str | None:
        """What a node's retries and ranks have in common: the pod name without attempt and replica."""
        if not self.is_remote or not self.execution_name:
            return None
        parts = [self.execution_name, self._node_label]
        if self.map_index is not None:
            parts.append(str(self.map_index))
        return "-".join(parts)

    def flyte_metadata(self) -> dict[str, str]:
        """The ``flyte/...`` metadata of this execution: only the values that are known."""
        candidates = {
            "flyte/execution_id": self.execution_id,
            "flyte/project": self.execution_project,
            "flyte/domain": self.execution_domain,
            "flyte/name": self.execution_name,
            "flyte/raw_output_prefix": self.raw_output_prefix,
            "flyte/output_metadata_prefix": self.output_metadata_prefix,
            "flyte/working_directory": self.working_directory,
            "flyte/task/name": self.task_name,
            "flyte/task/project": self.task_project,
            "flyte/task/domain": self.task_domain,
            "flyte/task/version": self.task_version,
            "flyte/execution_url": self.execution_url,
        }
        return {key: value for key, value in candidates.items() if value}

    def tags(self, user_tags: Iterable[str] | None = None, *, max_length: int | None = None) -> list[str]:
        """``user_tags`` followed by the execution project and domain (known ones, not repeated).

        Trackers tag runs with them so a project's or domain's runs can be filtered together;
        ``max_length`` leaves out a tag the backend would reject as too long.
        """
        tags = list(user_tags or ())
        for tag in (self.execution_project, self.execution_domain):
            if tag and tag not in tags and (max_length is None or len(tag) <= max_length):
                tags.append(tag)
        return tags

    def as_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (for logging, JSON or tests)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _parse_pod_name(hostname: str, execution_name: str | None) -> tuple[str | None, int | None, str | None]:
    """Split ``{execution}-{node}-{attempt}[-{replica}-{index}]`` into execution, attempt and node.

    Returns ``(execution_name, attempt, node_id)``; any part that cannot be read is ``None``.
    """
    if execution_name and hostname.startswith(execution_name + "-"):
        rest = hostname[len(execution_name) + 1 :].split("-")
    else:
        head, _, tail = hostname.partition("-")
        execution_name, rest = head or None, tail.split("-") if tail else []
    if len(rest) >= 3 and rest[-2] in _REPLICA_TYPES and rest[-1].isdigit():
        rest = rest[:-2]
    attempt: int | None = None
    if len(rest) >= 2 and rest[-1].isdigit():
        attempt = int(rest[-1])
        rest = rest[:-1]
    node_id = "-".join(rest) or None
    return execution_name, attempt, node_id


def execution_context(environ: Mapping[str, str] | None = None) -> ExecutionContext:
    """Read the execution context of the running code.

    Inside a task, flytekit's current context says whether the run is local or remote and gives
    the identifiers; the environment a Flyte pod gets fills in the rest (``HOSTNAME``,
    ``FLYTE_ATTEMPT_NUMBER``, map index, ``FLYTE_EXECUTION_URL``, torch elastic's ranks). Outside a
    task the environment alone decides: ``FLYTE_INTERNAL_EXECUTION_ID`` marks a pod.

    Args:
        environ: the environment to read instead of ``os.environ`` (for tests).
    """
    env = os.environ if environ is None else environ
    task = current_task()
    if task is not None:
        is_remote, params = task.is_remote, task.params
        exec_id = getattr(params, "execution_id", None)
        task_id = getattr(params, "task_id", None)
        values: dict[str, Any] = {
            "execution_project": _known(getattr(exec_id, "project", None)),
            "execution_domain": _known(getattr(exec_id, "domain", None)),
            "execution_name": _known(getattr(exec_id, "name", None)),
            "task_project": _known(getattr(task_id, "project", None)),
            "task_domain": _known(getattr(task_id, "domain", None)),
            "task_name": _known(getattr(task_id, "name", None)),
            "task_version": _known(getattr(task_id, "version", None)),
            "raw_output_prefix": _known(getattr(params, "raw_output_prefix", None)),
            "output_metadata_prefix": _known(getattr(params, "output_metadata_prefix", None)),
            "working_directory": _known(getattr(params, "working_directory", None)),
        }
    else:
        is_remote = bool(env.get("FLYTE_INTERNAL_EXECUTION_ID"))
        values = {
            "execution_project": env.get("FLYTE_INTERNAL_EXECUTION_PROJECT") or None,
            "execution_domain": env.get("FLYTE_INTERNAL_EXECUTION_DOMAIN") or None,
            "execution_name": env.get("FLYTE_INTERNAL_EXECUTION_ID") or None,
            "task_project": env.get("FLYTE_INTERNAL_TASK_PROJECT") or None,
            "task_domain": env.get("FLYTE_INTERNAL_TASK_DOMAIN") or None,
            "task_name": env.get("FLYTE_INTERNAL_TASK_NAME") or None,
            "task_version": env.get("FLYTE_INTERNAL_TASK_VERSION") or None,
        }

    pod_name: str | None = None
    node_id: str | None = None
    hostname_attempt: int | None = None
    hostname = (env.get("HOSTNAME") or "").strip().lower()
    # A laptop's HOSTNAME is not a pod name: only trust it in remote runs.
    if is_remote and hostname and _POD_NAME.match(hostname):
        pod_name = hostname
        parsed_execution, hostname_attempt, node_id = _parse_pod_name(hostname, values["execution_name"])
        values["execution_name"] = values["execution_name"] or parsed_execution

    map_index: int | None = None
    index_var = env.get("BATCH_JOB_ARRAY_INDEX_VAR_NAME")
    if index_var:
        raw_index = _int(env.get(index_var), None)
        if raw_index is not None:
            map_index = raw_index + (_int(env.get("BATCH_JOB_ARRAY_INDEX_OFFSET"), 0) or 0)
    elif task is not None and not is_remote:  # a local map task's element: flytekit's loop knows it
        map_index = local_map_index()

    world_size = _int(env.get("WORLD_SIZE"), 1) or 1
    rank = _int(env.get("RANK"), 0) or 0
    return ExecutionContext(
        is_remote=is_remote,
        node_id=node_id,
        attempt=_int(env.get("FLYTE_ATTEMPT_NUMBER"), hostname_attempt) or 0,
        map_index=map_index,
        pod_name=pod_name,
        execution_url=env.get("FLYTE_EXECUTION_URL") or None,
        rank=rank if rank < world_size else 0,
        local_rank=_int(env.get("LOCAL_RANK"), 0) or 0,
        world_size=world_size,
        local_world_size=_int(env.get("LOCAL_WORLD_SIZE"), 1) or 1,
        group_rank=_int(env.get("GROUP_RANK"), 0) or 0,
        **values,
    )
