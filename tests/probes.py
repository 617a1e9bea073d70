"""One probe per integration: how the contract suite drives a backend and reads back what it stored.

``tests/test_contract.py`` checks every lifecycle promise of the session core against every probe in
:data:`PROBES`, with the real backends offline. A probe says, for its kind:

* how to build its session (:meth:`Probe.make`) and its decorator (:meth:`Probe.decorate`: the
  decorator shortcut, or the session itself when the integration has none);
* how to record a value through a handle (:attr:`Probe.log`), whether a handle records at all
  (:attr:`Probe.is_active`), and how to read back every run the backend stored under the tracking
  directory (:attr:`Probe.read_back`), from the backend's own files;
* how to make the backend itself fail, fast and locally (:attr:`Probe.broken`).

A new integration gets every contract test by adding its probe here: the suite checks that every
registered kind has one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from flyte_ctx_tracking import (
    NullRun,
    comet_ml_login,
    comet_session,
    memray_profile,
    memray_profiling,
    mlflow_run,
    mlflow_session,
    neptune_init_run,
    neptune_session,
    wandb_init,
    wandb_session,
    whylogs_profile,
)
from flyte_ctx_tracking._session import Session

from .comet_archive import read_archive
from .fake_backend import FakeRun, FakeSession, fake_init
from .neptune_oplog import read_run
from .wandb_records import _item_key, _item_value, read_records

__all__ = ["PROBES", "Probe", "Recorded"]

PROBE_KEY = "probe"
"""The metric, field or column every probe records its values under."""


@dataclass(frozen=True)
class Recorded:
    """One run (or profile) as the backend stored it, read from the backend's own data."""

    values: tuple[float, ...]
    """The values :attr:`Probe.log` recorded, in order where the backend keeps one (profilers do not:
    compare them sorted)."""
    finished: bool
    """The backend wrote the end of the run: W&B's exit record, Comet's archive with its stop time,
    Neptune's flushed operation log, memray's capture compressed when its tracker stopped, whylogs' saved
    profile, the fake backend's close."""
    failed: bool | None
    """The outcome the backend recorded; None when its data keep no outcome (the profilers: their decks do)."""
    where: str = ""
    """The file or folder it was read from, for messages."""


@dataclass(frozen=True)
class Probe:
    """How the contract suite drives one integration."""

    kind: str
    session: type[Session[Any]]
    """The session class (the public ``*_session``/``*_profile`` name)."""
    shortcut: type[Any] | None
    """The decorator shortcut (``wandb_init``...), or None when the session is its own decorator."""
    log: Callable[[Any, int], None]
    """Record an int through a handle, as user code would; must accept the inactive handle too."""
    read_back: Callable[[Path], list[Recorded]]
    """Every run the backend stored under the tracking root (``$FLYTE_CTX_TRACKING_DIR``)."""
    is_active: Callable[[Any], bool]
    """Whether a handle records: False for a ``NullRun`` and a profiler's inactive handle."""
    broken: Callable[[Path], AbstractContextManager[dict[str, Any]]]
    """Given a scratch directory: a context in which the session, built with the options it yields,
    fails in its backend (fast, without a network)."""
    deck_says_failed: Callable[[str, BaseException], bool]
    """Whether one of this kind's decks says the block raised ``error``."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Options every session of the suite gets (trackers: offline, so that no warning is expected)."""
    fails_at: Literal["open", "close"] = "open"
    """When the failure :attr:`broken` provokes happens."""
    one_per_process: bool = False
    """The backend runs one session per process: concurrent sessions elsewhere get the inactive handle."""
    most_at_once: int | None = None
    """At most this many sessions in the isolation tests (a backend whose runs are slow to open)."""
    leftovers: Callable[[], list[str]] = list
    """What the backend still holds in this process after every session ended (it should be nothing)."""
    clear_leftovers: Callable[[], None] = lambda: None
    """Release those leftovers, so that one broken promise does not break every later test."""

    @property
    def tracks_runs(self) -> bool:
        """A tracker (online/offline modes, secrets, ``NullRun``) rather than a profiler."""
        return bool(self.session.tracks_runs)

    def make(self, **options: Any) -> Any:
        """The session, with :attr:`defaults` and ``options``."""
        return self.session(**{**self.defaults, **options})

    def decorate(self, **options: Any) -> Any:
        """The decorator a user puts below ``@task``: the shortcut, else the session itself."""
        factory = self.shortcut or self.session
        return factory(**{**self.defaults, **options})


# ------------------------------------------------------------------------------------ failures


@contextmanager
def _folder_taken_by_a_file(scratch: Path, name: str) -> Iterator[dict[str, Any]]:
    """A data directory whose ``name`` subfolder, which the backend creates, is a regular file."""
    directory = scratch / f"blocked-{name.strip('.')}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text("a regular file where the backend wants its folder\n")
    yield {"directory": directory}


def _writable(directory: Path) -> bool:
    try:
        probe = directory / ".probe-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return False
    return True


@contextmanager
def _unwritable_directory(scratch: Path) -> Iterator[dict[str, Any]]:
    """A data directory nothing can be written in: read-only, or ``/proc/self`` for root (whom
    permissions do not stop)."""
    directory = scratch / "read-only"
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o500)
    try:
        chosen = directory
        if _writable(directory):
            proc = Path("/proc/self")
            if not (proc.is_dir() and not _writable(proc)):
                pytest.skip("no unwritable directory here (running as root without /proc)")
            chosen = proc
        yield {"directory": chosen}
    finally:
        directory.chmod(0o700)


@contextmanager
def _foreign_memray_tracker(scratch: Path) -> Iterator[dict[str, Any]]:
    """A memray tracker of someone else's is active: memray allows one per process."""
    import memray

    scratch.mkdir(parents=True, exist_ok=True)
    with memray.Tracker(os.fspath(scratch / "foreign-capture.bin")):
        yield {}


@contextmanager
def _failing_fake(scratch: Path) -> Iterator[dict[str, Any]]:
    yield {"fail_open": 1_000_000}


# ------------------------------------------------------------------------------------ trackers


def _is_tracking(handle: Any) -> bool:
    return handle is not None and not isinstance(handle, NullRun)


def _run_card_says_failed(html: str, error: BaseException) -> bool:
    return "run (failed)" in html


def _wandb_log(handle: Any, value: int) -> None:
    handle.log({PROBE_KEY: value})


def _wandb_read_back(root: Path) -> list[Recorded]:
    found = []
    for path in sorted(root.rglob("run-*.wandb")):
        try:
            records = read_records(path)
        except ValueError:  # still being written
            found.append(Recorded((), finished=False, failed=None, where=str(path)))
            continue
        values: list[float] = []
        exits = []
        for record in records:
            kind = record.WhichOneof("record_type")
            if kind == "history":
                values.extend(_item_value(item) for item in record.history.item if _item_key(item) == PROBE_KEY)
            elif kind == "exit":
                exits.append(record.exit.exit_code)
        if len(exits) > 1:
            raise AssertionError(f"{path} records {len(exits)} exits: the run was finished more than once")
        failed = exits[0] != 0 if exits else None
        found.append(Recorded(tuple(values), finished=bool(exits), failed=failed, where=str(path)))
    return found


def _comet_log(handle: Any, value: int) -> None:
    handle.log_metric(PROBE_KEY, value)


def _comet_read_back(root: Path) -> list[Recorded]:
    found = []
    for path in sorted(root.rglob("*.zip"), key=lambda p: p.stat().st_mtime):
        with zipfile.ZipFile(path) as zipped:
            complete = "experiment.json" in zipped.namelist()
        if not complete:  # Comet creates the archive when the experiment starts, and fills it when it ends
            found.append(Recorded((), finished=False, failed=None, where=str(path)))
            continue
        archive = read_archive(path)
        status = archive.others.get("flyte/status")
        failed = status == "failed"
        if failed != archive.error_reported:
            raise AssertionError(
                f"{archive.path}: flyte/status={status!r} but Comet's crash record says {archive.error_reported}"
            )
        values = tuple(value for _, value in archive.metrics(PROBE_KEY))
        finished = archive.experiment.get("stop_time") is not None
        found.append(Recorded(values, finished=finished, failed=failed, where=str(archive.path)))
    return found


def _comet_leftovers() -> list[str]:
    if "comet_ml" not in sys.modules:
        return []
    import comet_ml

    running = comet_ml.get_running_experiment()
    return [f"Comet experiment {running.get_key()} still running"] if running is not None and not running.ended else []


def _comet_clear_leftovers() -> None:
    if "comet_ml" not in sys.modules:
        return
    import comet_ml

    running = comet_ml.get_running_experiment()
    if running is not None and not running.ended:
        with contextlib.suppress(Exception):  # a half-started experiment may not end cleanly
            running.end()


def _neptune_log(handle: Any, value: int) -> None:
    handle[PROBE_KEY].append(value)


def _neptune_read_back(root: Path) -> list[Recorded]:
    found = []
    folders = sorted(p for p in root.rglob("run__*") if p.is_dir() and p.parent.name == "offline")
    for folder in folders:
        try:
            run = read_run(folder)
            versions = [
                json.loads(line)["version"]
                for log in folder.glob("data-*.log")
                for line in log.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
        except ValueError:  # a line half written: the run is still open
            found.append(Recorded((), finished=False, failed=None, where=str(folder)))
            continue
        put = (folder / "last_put_version").read_text().strip()
        # Until the run stops, its operations sit in a buffer: all of them on disk means it stopped.
        finished = bool(versions) and put.isdigit() and max(versions) == int(put)
        failed = bool(run.fields.get("sys/failed")) if finished else None
        found.append(Recorded(tuple(run.series(PROBE_KEY)), finished=finished, failed=failed, where=str(folder)))
    return found


_MLFLOW_STEPS: dict[str, int] = {}


def _mlflow_log(handle: Any, value: int) -> None:
    if isinstance(handle, NullRun):
        return
    import mlflow

    # Through the fluent API, as user code logs: it must find the block's own run.
    run_id = mlflow.active_run().info.run_id
    if run_id != handle.info.run_id:
        raise AssertionError(f"mlflow.active_run() is {run_id}, not the block's run {handle.info.run_id}")
    step = _MLFLOW_STEPS[run_id] = _MLFLOW_STEPS.get(run_id, -1) + 1
    mlflow.log_metric(PROBE_KEY, value, step=step)


def _mlflow_read_back(root: Path) -> list[Recorded]:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    found = []
    for store in sorted(root.rglob("mlflow.db")):
        client = MlflowClient(f"sqlite:///{store}")
        experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
        for run in client.search_runs(experiments, run_view_type=ViewType.ALL, order_by=["attributes.start_time"]):
            if "flyte_ctx_tracking.execution_parent" in run.data.tags:
                continue
            history = sorted(client.get_metric_history(run.info.run_id, PROBE_KEY), key=lambda metric: metric.step)
            status = run.info.status
            finished = status in ("FINISHED", "FAILED", "KILLED")
            failed = status != "FINISHED" if finished else None
            values = tuple(metric.value for metric in history)
            found.append(Recorded(values, finished=finished, failed=failed, where=f"{store}#{run.info.run_id}"))
    return found


# ------------------------------------------------------------------------------------ profilers

# memray records allocations, not values: a value is an allocation of a size that encodes it.
_MEMRAY_BASE = 5_000_000
_MEMRAY_STEP = 4096
_MEMRAY_SLACK = 64
_MEMRAY_MAX_VALUE = 1000
_LZ4_FRAME = b"\x04\x22\x4d\x18"


def _memray_log(handle: Any, value: int) -> None:
    if not 0 < value <= _MEMRAY_MAX_VALUE:
        raise ValueError(f"the memray probe records values from 1 to {_MEMRAY_MAX_VALUE}")
    block = bytearray(_MEMRAY_BASE + value * _MEMRAY_STEP - 1)  # one malloc of exactly the encoded size
    del block


def _memray_value(size: int) -> int | None:
    value, rest = divmod(size - _MEMRAY_BASE + _MEMRAY_SLACK, _MEMRAY_STEP)
    if size < _MEMRAY_BASE or rest > 2 * _MEMRAY_SLACK or not 0 < value <= _MEMRAY_MAX_VALUE:
        return None
    return value


def _memray_read_back(root: Path) -> list[Recorded]:
    import memray

    found = []
    for path in sorted((root / "memray").glob("*.bin")) if (root / "memray").is_dir() else ():
        try:
            with memray.FileReader(os.fspath(path)) as reader:
                sizes = [record.size for record in reader.get_allocation_records()]
        except Exception:  # not finalized, or not a capture
            found.append(Recorded((), finished=False, failed=None, where=str(path)))
            continue
        with path.open("rb") as file:
            finished = file.read(4) == _LZ4_FRAME  # memray compresses a capture when its tracker stops
        values = tuple(value for value in map(_memray_value, sizes) if value is not None)
        found.append(Recorded(values, finished=finished, failed=None, where=str(path)))
    return found


def _memray_active(handle: Any) -> bool:
    return bool(getattr(handle, "profiled", False))


def _memray_deck_says_failed(html: str, error: BaseException) -> bool:
    return f"the section raised {type(error).__name__}" in html


def _whylogs_log(handle: Any, value: int) -> None:
    handle.log({PROBE_KEY: value})


def _whylogs_read_back(root: Path) -> list[Recorded]:
    from flyte_ctx_tracking.sessions.whylogs._analysis import DatasetProfileView

    found = []
    for path in sorted((root / "whylogs").glob("*.bin")) if (root / "whylogs").is_dir() else ():
        view = DatasetProfileView.read(os.fspath(path))
        column = view.get_column(PROBE_KEY)
        values: list[float] = []
        if column is not None:
            items = column.get_metric("frequent_items")
            for item in items.strings if items is not None else ():
                values.extend([float(item.value)] * int(item.est))
        found.append(Recorded(tuple(sorted(values)), finished=True, failed=None, where=str(path)))
    return found


def _whylogs_active(handle: Any) -> bool:
    return bool(getattr(handle, "active", False))


def _whylogs_deck_says_failed(html: str, error: BaseException) -> bool:
    return f"The block raised {type(error).__name__}" in html


# ------------------------------------------------------------------------------------ the fake backend

# tests/fake_backend.py keeps its runs in memory: a ledger of every run it opened, and of how many
# times each was closed, stands for its storage. It wraps FakeSession's hooks once, without changing
# what they do.
_FAKE_RUNS: list[FakeRun] = []
_FAKE_CLOSES: dict[int, int] = {}


def _keep_a_ledger_of_fake_runs() -> None:
    if getattr(FakeSession._open, "__probe_ledger__", False):
        return
    opened, closed = FakeSession._open, FakeSession._close

    @functools.wraps(opened)
    def _open(self: FakeSession, plan: Any) -> FakeRun:
        run = opened(self, plan)
        _FAKE_RUNS.append(run)
        return run

    @functools.wraps(closed)
    def _close(self: FakeSession, handle: FakeRun, plan: Any, error: BaseException | None) -> None:
        closed(self, handle, plan, error)
        _FAKE_CLOSES[id(handle)] = _FAKE_CLOSES.get(id(handle), 0) + 1

    _open.__probe_ledger__ = True  # type: ignore[attr-defined]
    FakeSession._open = _open  # type: ignore[method-assign]
    FakeSession._close = _close  # type: ignore[method-assign]


_keep_a_ledger_of_fake_runs()


def _fake_log(handle: Any, value: int) -> None:
    handle.log.append({PROBE_KEY: value})  # a NullRun takes it too, and records nothing


def _fake_read_back(root: Path) -> list[Recorded]:
    found = []
    for run in list(_FAKE_RUNS):
        if not Path(run.directory).is_relative_to(root):
            continue
        closes = _FAKE_CLOSES.get(id(run), 0)
        if closes > 1:
            raise AssertionError(f"fake run {run.number} was closed {closes} times")
        values = tuple(entry[PROBE_KEY] for entry in run.log if isinstance(entry, dict) and PROBE_KEY in entry)
        failed = run.failed if closes else None
        found.append(Recorded(values, finished=bool(closes), failed=failed, where=f"fake run {run.number}"))
    return found


# ------------------------------------------------------------------------------------ the probes

_OFFLINE: dict[str, Any] = {"mode": "offline"}

PROBES: dict[str, Probe] = {
    probe.kind: probe
    for probe in (
        Probe(
            kind="wandb",
            session=wandb_session,
            shortcut=wandb_init,
            log=_wandb_log,
            read_back=_wandb_read_back,
            is_active=_is_tracking,
            broken=functools.partial(_folder_taken_by_a_file, name="wandb"),  # type: ignore[arg-type]
            deck_says_failed=_run_card_says_failed,
            defaults=_OFFLINE,
            most_at_once=8,  # each W&B run takes a few hundred milliseconds to open
        ),
        Probe(
            kind="comet",
            session=comet_session,
            shortcut=comet_ml_login,
            log=_comet_log,
            read_back=_comet_read_back,
            is_active=_is_tracking,
            broken=_unwritable_directory,
            deck_says_failed=_run_card_says_failed,
            defaults=_OFFLINE,
            one_per_process=True,
            leftovers=_comet_leftovers,
            clear_leftovers=_comet_clear_leftovers,
        ),
        Probe(
            kind="neptune",
            session=neptune_session,
            shortcut=neptune_init_run,
            log=_neptune_log,
            read_back=_neptune_read_back,
            is_active=_is_tracking,
            broken=functools.partial(_folder_taken_by_a_file, name=".neptune"),  # type: ignore[arg-type]
            deck_says_failed=_run_card_says_failed,
            defaults=_OFFLINE,
        ),
        Probe(
            kind="mlflow",
            session=mlflow_session,
            shortcut=mlflow_run,
            log=_mlflow_log,
            read_back=_mlflow_read_back,
            is_active=_is_tracking,
            # A store that is no database: MLflow cannot open it.
            broken=functools.partial(_folder_taken_by_a_file, name="mlflow.db"),  # type: ignore[arg-type]
            deck_says_failed=_run_card_says_failed,
            defaults=_OFFLINE,
        ),
        Probe(
            kind="memray",
            session=memray_profile,
            shortcut=memray_profiling,
            log=_memray_log,
            read_back=_memray_read_back,
            is_active=_memray_active,
            broken=_foreign_memray_tracker,
            deck_says_failed=_memray_deck_says_failed,
            one_per_process=True,
        ),
        Probe(
            kind="whylogs",
            session=whylogs_profile,
            shortcut=None,
            log=_whylogs_log,
            read_back=_whylogs_read_back,
            is_active=_whylogs_active,
            broken=_unwritable_directory,
            deck_says_failed=_whylogs_deck_says_failed,
            defaults={"interactive": False},
            fails_at="close",
        ),
        Probe(
            kind="fake",
            session=FakeSession,
            shortcut=fake_init,
            log=_fake_log,
            read_back=_fake_read_back,
            is_active=_is_tracking,
            broken=_failing_fake,
            deck_says_failed=_run_card_says_failed,
            defaults=_OFFLINE,
        ),
    )
}
"""Every integration's probe, by kind."""
