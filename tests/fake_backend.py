"""A small in-test backend for the session core: it records what the core asks of it.

It is the thing the core drives, not a mock of anything under test: the core's lifecycle runs
for real against it.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from flyte_ctx_tracking import SessionDecorator, TrackingSession
from flyte_ctx_tracking._defaults import TrackingDefaults
from flyte_ctx_tracking._session import OpenPlan, RunInfo
from flyte_ctx_tracking._sharing import Sharing

_ids = itertools.count()


@dataclass
class FakeRun:
    number: int
    mode: str
    run_id: str | None
    directory: str
    api_key: str | None = field(repr=False)
    closed: bool = False
    failed: bool | None = None
    error: BaseException | None = None
    log: list[Any] = field(default_factory=list)
    project: str | None = None
    entity: str | None = None
    tags: list[str] = field(default_factory=list)
    sharing: Sharing | None = None
    """What the core decided at open (run mode, rank scope, shared identity)."""


class FakeSession(TrackingSession[FakeRun], kind="fake", display_name="Fake tracker", backend="json"):
    """A tracker defined outside the package: registering its kind is all it takes.

    Like the real trackers it can share a run online (several writers, one identity) and nest runs
    online and offline, but not share offline: what a mode the backend cannot do looks like.
    """

    run_modes = {"online": ("new", "shared", "nested"), "offline": ("new", "nested")}

    def __init__(
        self,
        target: str = "default",
        *,
        project: str | None = None,
        entity: str | None = None,
        tags: list[str] | None = None,
        run_id: str | None = None,
        fail_open: int = 0,
        fail_close: bool = False,
        error_text: str = "backend exploded",
        hang_online: threading.Event | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.target = target
        self.project = project
        self.entity = entity
        self.tags = tags
        self.run_id = run_id  # a user-chosen identity, as wandb's id= or Comet's experiment_key=
        self.fail_open = fail_open  # how many opens fail before one succeeds
        self.fail_close = fail_close
        self._error_text = error_text
        self._hang_online = hang_online  # an online open waits for it: a server that never answers
        self.opened: list[FakeRun] = []

    def _reuse_key(self) -> Hashable:
        return self.target

    def _backend_defaults(self, defaults: TrackingDefaults) -> dict[str, Any]:
        updates = defaults.fill(self, project="project", entity="entity")
        own = list(self.tags or ())
        extra = [tag for tag in defaults.tags if tag not in own]
        if extra:
            updates["tags"] = own + extra
        return updates

    def _open(self, plan: OpenPlan) -> FakeRun:
        if self.fail_open:
            self.fail_open -= 1
            raise ConnectionError(self._error_text)
        if plan.mode == "online" and self._hang_online is not None:
            self._hang_online.wait(timeout=60)
        run_id = self.run_id + plan.sharing.suffix if self.run_id else plan.run_id
        run = FakeRun(next(_ids), plan.mode, run_id, str(plan.directory), plan.api_key)
        run.project, run.entity, run.tags, run.sharing = self.project, self.entity, list(self.tags or ()), plan.sharing
        self.opened.append(run)
        return run

    def _close(self, handle: FakeRun, plan: OpenPlan, error: BaseException | None) -> None:
        if self.fail_close:
            raise OSError(self._error_text)
        handle.closed = True
        handle.failed = error is not None
        handle.error = error

    def _log_metrics(self, handle: FakeRun, metrics: Any) -> None:
        handle.log.append(dict(metrics))

    def _run_info(self, handle: FakeRun, plan: OpenPlan, error: BaseException | None) -> RunInfo:
        return RunInfo(
            backend=self.display_name,
            fields={
                "run": str(handle.number),
                "mode": plan.mode,
                **({"project": self.project} if self.project else {}),
            },
            tags=list(self.tags or ()),
            local_path=handle.directory if plan.mode == "offline" else None,
            sync_command=f"fake sync {handle.directory}" if plan.mode == "offline" else None,
            url="https://fake.example/run" if plan.mode == "online" else None,
            failed=error is not None,
        )


class fake_init(SessionDecorator, session=FakeSession):
    """The decorator shortcut over FakeSession, as an integration would write it."""

    def get_extra_config(self) -> dict[str, str]:
        return {"target": self.target, self.LINK_TYPE_KEY: "fake-execution-id"}
