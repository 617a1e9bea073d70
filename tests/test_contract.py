"""The contract every integration keeps, checked against each one's real backend, offline.

Each test runs once per probe of ``tests/probes.py`` (one per registered kind) and reads back what
the backend itself stored: a W&B transaction log, a Comet archive, a Neptune operation log, a memray
capture, a saved whylogs profile, the fake backend's ledger. A new integration gets all of it by
adding its probe.

No test asserts a duration. The few timeouts are deadlock guards, only ever reached when a promise
is broken.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import subprocess
import sys
import textwrap
import threading
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flytekit import task
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.python_function_task import AsyncPythonFunctionTask

from flyte_ctx_tracking import NullRun, TrackingError, TrackingWarning, current_run, integrations
from flyte_ctx_tracking._session import MODE_ENV_VAR

from .conftest import REPO
from .fake_backend import FakeSession
from .probes import PROBES, Probe

HANG_GUARD = 60.0
"""Seconds a barrier or handshake waits before the test fails instead of hanging (never a timing)."""
THREADS = 8
TASKS = 20
OPENING_TOGETHER = 4
"""How many asyncio tasks' backend opens are held until they can all run at once (divides TASKS)."""


class ProbeFailure(Exception):
    """The user's own exception."""


def each_probe(
    *, xfail: Mapping[str, str] | None = None, where: Callable[[Probe], bool] | None = None
) -> pytest.MarkDecorator:
    """Parametrize ``probe`` over every probe (``where`` it applies); ``xfail`` names known package bugs."""
    known = xfail or {}
    return pytest.mark.parametrize(
        "probe",
        [
            pytest.param(
                probe, id=kind, marks=[pytest.mark.xfail(strict=True, reason=known[kind])] if kind in known else []
            )
            for kind, probe in PROBES.items()
            if where is None or where(probe)
        ],
    )


@pytest.fixture(autouse=True)
def _nothing_left_behind() -> Iterator[None]:
    """Around each test, release whatever a backend still holds, so that one broken promise (reported by
    the test that checks it) does not break every later test of that backend."""
    for probe in PROBES.values():
        probe.clear_leftovers()
    yield
    for probe in PROBES.values():
        probe.clear_leftovers()


@pytest.fixture
def root(_isolated_tracking: Path) -> Path:
    """This test's tracking root, ``$FLYTE_CTX_TRACKING_DIR``: where the backends keep their data."""
    return _isolated_tracking


@contextmanager
def recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def tracking_warnings(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, TrackingWarning)]


def running_task_decks() -> dict[str, str]:
    """Title -> HTML of the decks the running flytekit task has so far."""
    return {deck.name: deck.html for deck in FlyteContextManager.current_context().user_space_params.decks}


def files_under(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


# ------------------------------------------------------------------------------ watching the backend


class LoopWitness:
    """Proves that a backend call runs while the event loop goes on: the call waits until the ticker
    has ticked once more. A call running on the loop's own thread would wait for nothing (the ticker
    cannot run) until the guard expires, and report it."""

    def __init__(self) -> None:
        self.ticks = 0
        self._pending: list[threading.Event] = []
        self._lock = threading.Lock()

    def during_backend_call(self) -> bool:
        ticked = threading.Event()
        with self._lock:
            self._pending.append(ticked)
        return ticked.wait(HANG_GUARD)

    async def tick(self) -> None:
        while True:
            with self._lock:
                pending, self._pending = self._pending, []
            for event in pending:
                event.set()
            self.ticks += 1
            await asyncio.sleep(0)


@dataclass
class BackendCall:
    thread: int
    witnessed: bool | None


@dataclass
class BackendCalls:
    """The calls the core made to the probe's backend hooks ``_open`` and ``_close``."""

    opens: list[BackendCall] = field(default_factory=list)
    closes: list[BackendCall] = field(default_factory=list)
    gate: threading.Barrier | None = None
    """Held by each open before it reaches the backend: opens that many at the very same moment."""
    witness: LoopWitness | None = None

    def record(self, calls: list[BackendCall]) -> None:
        witnessed = self.witness.during_backend_call() if self.witness is not None else None
        calls.append(BackendCall(threading.get_ident(), witnessed))


@pytest.fixture
def backend_calls(probe: Probe, monkeypatch: pytest.MonkeyPatch) -> BackendCalls:
    """Watch the session class's backend hooks (they still run, unchanged)."""
    calls = BackendCalls()
    opened, closed = probe.session._open, probe.session._close

    def _open(self: Any, plan: Any) -> Any:
        if calls.gate is not None:
            calls.gate.wait()
        calls.record(calls.opens)
        return opened(self, plan)

    def _close(self: Any, handle: Any, plan: Any, error: BaseException | None) -> None:
        calls.record(calls.closes)
        closed(self, handle, plan, error)

    monkeypatch.setattr(probe.session, "_open", _open)
    monkeypatch.setattr(probe.session, "_close", _close)
    return calls


# ------------------------------------------------------------------------------ the registry


def test_every_registered_kind_has_a_probe() -> None:
    registered = {
        kind
        for kind, integration in integrations().items()
        if integration.session_class.__module__.startswith("flyte_ctx_tracking.")
        or integration.session_class is FakeSession
    }
    assert registered == set(PROBES), "add a probe to tests/probes.py for each registered kind"
    assert {"wandb", "comet", "neptune", "memray", "whylogs", "fake"} <= registered


@each_probe()
def test_the_kind_is_registered_by_the_probes_session_class(probe: Probe) -> None:
    integration = integrations()[probe.kind]
    assert integration.session_class is probe.session
    assert probe.session.kind == probe.kind
    if probe.shortcut is not None:
        assert probe.shortcut.session_class is probe.session


def test_current_run_of_an_unknown_kind_is_refused_naming_every_registered_kind() -> None:
    with pytest.raises(ValueError) as raised:
        current_run("no_such_tracker")
    message = str(raised.value)
    assert "no_such_tracker" in message
    for kind in integrations():
        assert repr(kind) in message


def test_a_session_class_defined_in_a_test_file_registers_and_current_run_finds_it() -> None:
    assert FakeSession.__module__ == "tests.fake_backend"
    assert integrations()["fake"].session_class is FakeSession
    assert current_run("fake") is None
    with FakeSession(mode="offline") as run:
        assert current_run("fake") is run
    assert current_run("fake") is None


def test_importing_the_package_its_names_and_building_sessions_imports_no_backend() -> None:
    backends = sorted(
        integration.backend_module
        for integration in integrations().values()
        if integration.session_class.__module__.startswith("flyte_ctx_tracking.")
    )
    assert {"wandb", "comet_ml", "neptune", "memray", "whylogs"} <= set(backends)
    code = textwrap.dedent(
        f"""
        import sys
        backends = {backends!r}

        def loaded(*more):
            return sorted(m for m in sys.modules if m.split(".")[0] in (*backends, *more))

        import flyte_ctx_tracking
        print("import", loaded("flytekit", "pandas"))  # not even flytekit, nor pandas
        names = [name for name in flyte_ctx_tracking.__all__ if name != "WhylogsDatasetProfileTransformer"]
        values = [getattr(flyte_ctx_tracking, name) for name in names]  # the transformer needs whylogs
        print("names", loaded())
        base = flyte_ctx_tracking.SessionDecorator
        sessions, decorated = [], []
        for integration in flyte_ctx_tracking.integrations().values():
            if integration.session_class.__module__.startswith("flyte_ctx_tracking."):
                sessions.append(integration.session_class())  # every shipped session, with its defaults
        for value in values:
            if isinstance(value, type) and issubclass(value, base) and value is not base:
                decorated.append(value()(lambda: None))  # every decorator shortcut, on a function
        print("built", len(sessions), len(decorated), loaded())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300, check=True
    )
    lines = done.stdout.splitlines()
    assert lines[:2] == ["import []", "names []"], done.stdout + done.stderr
    built, sessions, decorated, loaded = lines[2].split(" ", 3)
    assert (built, loaded) == ("built", "[]"), done.stdout + done.stderr
    assert int(sessions) == len(backends) and int(decorated) >= 4


# ------------------------------------------------------------------------------ lifecycle


@each_probe()
def test_nesting_the_same_session_reuses_its_handle_and_the_outer_exit_closes_it_once(
    probe: Probe, backend_calls: BackendCalls, root: Path
) -> None:
    session = probe.make()
    with recorded_warnings() as caught:
        with session as outer:
            assert probe.is_active(outer)
            assert current_run(probe.kind) is outer
            probe.log(outer, 1)
            with session as inner:
                assert inner is outer
                probe.log(inner, 2)
                with session as innermost:
                    assert innermost is outer
            assert current_run(probe.kind) is outer
            assert backend_calls.closes == []
            runs = probe.read_back(root)
            assert not any(run.finished for run in runs), runs  # still open after the inner exits
            probe.log(outer, 3)
        assert current_run(probe.kind) is None
    assert tracking_warnings(caught) == []
    assert (len(backend_calls.opens), len(backend_calls.closes)) == (1, 1)
    (run,) = probe.read_back(root)
    assert sorted(run.values) == [1, 2, 3]
    assert run.finished and run.failed is not True


@each_probe()
def test_the_users_exception_propagates_unchanged_and_the_run_is_recorded_as_failed(probe: Probe, root: Path) -> None:
    error = ProbeFailure("the user's block failed")
    seen: dict[str, Any] = {}

    @task(enable_deck=True)
    def failing() -> None:
        before = set(running_task_decks())
        try:
            with probe.make() as handle:
                probe.log(handle, 7)
                raise error  # (marked line: the user's raise)
        except ProbeFailure as caught:
            seen["caught"] = caught
            seen["frames"] = [(frame.filename, frame.lineno) for frame in traceback.extract_tb(caught.__traceback__)]
        seen["decks"] = [html for title, html in running_task_decks().items() if title not in before]

    failing()
    assert seen["caught"] is error
    assert error.__cause__ is None and error.__context__ is None
    # The same traceback: the user's frame only, ending at the user's raise; nothing of the library's.
    assert seen["frames"] == [(__file__, marked_line("the user's raise"))]
    (run,) = probe.read_back(root)
    assert run.values == (7,)
    assert run.finished
    # Trackers record the outcome in the run; a profiler's data keep none (None): its deck says it.
    assert run.failed is (True if probe.tracks_runs else None)
    assert any(probe.deck_says_failed(html, error) for html in seen["decks"]), seen["decks"]


@each_probe()
def test_a_backend_failure_warns_once_or_raises_a_tracking_error_and_the_block_runs_on(
    probe: Probe, tmp_path: Path, root: Path
) -> None:
    ran: list[str] = []
    with probe.broken(tmp_path / "broken") as options:
        with recorded_warnings() as caught:
            with probe.make(on_error="warn", **options) as handle:
                ran.append("warn")
                probe.log(handle, 1)
        (warning,) = tracking_warnings(caught)
        assert probe.session.__name__ in str(warning.message)
        assert ran == ["warn"]
        if probe.fails_at == "open":
            assert not probe.is_active(handle)

        with recorded_warnings() as caught, pytest.raises(TrackingError) as raised:
            with probe.make(on_error="raise", **options) as handle:
                ran.append("raise")
                probe.log(handle, 2)
        assert tracking_warnings(caught) == []
        assert probe.session.__name__ in str(raised.value)
        assert raised.value.__cause__ is not None  # the backend's own error
        # A failure to open stops the block before it runs; a failure to close comes after it ran.
        assert ran == (["warn"] if probe.fails_at == "open" else ["warn", "raise"])
    assert current_run(probe.kind) is None
    assert probe.read_back(root) == []


@each_probe()
def test_a_backend_failure_leaves_nothing_behind_and_the_next_session_records(
    probe: Probe, tmp_path: Path, root: Path
) -> None:
    with probe.broken(tmp_path / "broken") as options, recorded_warnings():
        for on_error in ("warn", "raise"):
            with contextlib.suppress(TrackingError), probe.make(on_error=on_error, **options) as handle:
                probe.log(handle, 1)
    assert probe.leftovers() == []
    with recorded_warnings() as caught:
        with probe.make() as handle:
            assert probe.is_active(handle)
            probe.log(handle, 2)
    assert tracking_warnings(caught) == []
    (run,) = probe.read_back(root)
    assert run.values == (2,)
    assert run.finished and run.failed is not True


def _accepts_anything(run: Any) -> None:
    run.log({"loss": 0.1})
    run["metrics/loss"].append(0.1)
    run["params"]["lr"] = 3e-4
    run.log_metric("auc", 0.9, step=1).anything.else_(1, key=2)
    assert list(run) == []
    with run as inner:
        assert inner is run


@each_probe()
def test_the_mode_variable_disables_and_a_disabled_session_records_nothing(
    probe: Probe, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, root: Path
) -> None:
    monkeypatch.setenv(MODE_ENV_VAR, "disabled")
    with recorded_warnings() as caught:
        with probe.make() as handle:
            assert not probe.is_active(handle)
            assert current_run(probe.kind) is handle
            probe.log(handle, 1)
            if probe.tracks_runs:
                assert isinstance(handle, NullRun) and not handle
                _accepts_anything(handle)

        @probe.decorate()
        def decorated() -> Any:
            handle = current_run(probe.kind)
            probe.log(handle, 2)
            return handle

        assert not probe.is_active(decorated())

        # The variable never turns on a session disabled in code.
        monkeypatch.setenv(MODE_ENV_VAR, "offline")
        with probe.make(mode="disabled") as handle:
            assert not probe.is_active(handle)
            probe.log(handle, 3)
    assert tracking_warnings(caught) == []
    assert current_run(probe.kind) is None
    assert probe.read_back(root) == []
    assert files_under(tmp_path) == []


# ------------------------------------------------------------------------------ isolation


def _check_isolation(
    probe: Probe,
    seen: Mapping[int, tuple[Any, Any]],
    count: int,
    caught: list[warnings.WarningMessage],
    calls: BackendCalls,
    root: Path,
) -> None:
    assert sorted(seen) == list(range(1, count + 1))
    for handle, current in seen.values():
        assert current is handle  # each sees its own handle
    assert len({id(handle) for handle, _ in seen.values()}) == count
    active = sorted(value for value, (handle, _) in seen.items() if probe.is_active(handle))
    runs = probe.read_back(root)
    assert all(run.finished and run.failed is not True for run in runs)
    if probe.one_per_process:
        assert len(active) == 1, f"{len(active)} sessions opened at once in one process"
        assert len(tracking_warnings(caught)) == count - 1
        (run,) = runs
        assert active[0] in run.values  # the process-wide capture may also hold the others' values
    else:
        assert active == list(range(1, count + 1))
        assert tracking_warnings(caught) == []
        assert sorted(run.values for run in runs) == [(value,) for value in range(1, count + 1)]
    assert len(calls.opens) == count
    assert len(calls.closes) == len(active)


@each_probe()
def test_threads_each_see_their_own_handle(probe: Probe, backend_calls: BackendCalls, root: Path) -> None:
    count = min(THREADS, probe.most_at_once or THREADS)
    session = probe.make()  # one session object shared by every thread
    backend_calls.gate = threading.Barrier(count, timeout=HANG_GUARD)  # every open reaches the backend at once
    inside = threading.Barrier(count, timeout=HANG_GUARD)
    seen: dict[int, tuple[Any, Any]] = {}
    errors: list[BaseException] = []

    def worker(value: int) -> None:
        try:
            with session as handle:
                inside.wait()  # every thread is inside its block at once
                seen[value] = (handle, current_run(probe.kind))
                probe.log(handle, value)
                inside.wait()
            assert current_run(probe.kind) is None
        except BaseException as error:
            errors.append(error)
            inside.abort()

    with recorded_warnings() as caught:
        threads = [threading.Thread(target=worker, args=(value,)) for value in range(1, count + 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    _check_isolation(probe, seen, count, caught, backend_calls, root)


class AsyncBarrier:
    """``asyncio.Barrier`` for Python 3.10: the n-th arrival releases everyone."""

    def __init__(self, parties: int) -> None:
        self._parties = parties
        self._arrived = 0
        self._released = asyncio.Event()

    async def wait(self) -> None:
        self._arrived += 1
        if self._arrived == self._parties:
            self._released.set()
        await asyncio.wait_for(self._released.wait(), HANG_GUARD)


@each_probe()
async def test_asyncio_tasks_each_see_their_own_handle(probe: Probe, backend_calls: BackendCalls, root: Path) -> None:
    count = min(TASKS, probe.most_at_once or TASKS)
    assert count % OPENING_TOGETHER == 0
    session = probe.make()
    backend_calls.gate = threading.Barrier(OPENING_TOGETHER, timeout=HANG_GUARD)
    all_inside, all_logged = AsyncBarrier(count), AsyncBarrier(count)
    seen: dict[int, tuple[Any, Any]] = {}

    async def worker(value: int) -> None:
        async with session as handle:
            await all_inside.wait()
            seen[value] = (handle, current_run(probe.kind))
            probe.log(handle, value)
            await all_logged.wait()
        assert current_run(probe.kind) is None

    with recorded_warnings() as caught:
        await asyncio.gather(*(worker(value) for value in range(1, count + 1)))
    _check_isolation(probe, seen, count, caught, backend_calls, root)


@each_probe()
async def test_async_with_opens_and_closes_the_backend_off_the_event_loop(
    probe: Probe, backend_calls: BackendCalls, root: Path
) -> None:
    witness = LoopWitness()
    backend_calls.witness = witness
    ticker = asyncio.create_task(witness.tick())
    loop_thread = threading.get_ident()
    progress: list[tuple[int, int, int]] = []

    async def block(value: int) -> None:
        before = witness.ticks
        async with probe.make() as handle:
            entered = witness.ticks
            probe.log(handle, value)
        progress.append((before, entered, witness.ticks))

    try:
        with recorded_warnings():  # one-per-process backends warn for the blocks they cannot open
            await asyncio.gather(*(block(value) for value in (1, 2, 3)))
    finally:
        ticker.cancel()
    assert len(backend_calls.opens) == 3 and backend_calls.closes
    for call in backend_calls.opens + backend_calls.closes:
        assert call.thread != loop_thread
        assert call.witnessed is True  # the ticker ticked while the backend was opening or closing
    for before, entered, after in progress:
        assert before < entered <= after
    runs = probe.read_back(root)
    assert runs and all(run.finished for run in runs)
    if not probe.one_per_process:
        assert sorted(run.values for run in runs) == [(1,), (2,), (3,)]


# ------------------------------------------------------------------------------ decorators


@each_probe()
def test_the_decorator_below_task_runs_each_call_of_a_local_task_in_a_session(probe: Probe, root: Path) -> None:
    @task
    @probe.decorate()
    def tracked(value: int) -> int:
        handle = current_run(probe.kind)
        assert probe.is_active(handle)
        probe.log(handle, value)
        return value + 1

    assert tracked(value=5) == 6
    assert current_run(probe.kind) is None
    (run,) = probe.read_back(root)
    assert run.values == (5,)
    assert run.finished and run.failed is not True


def _plain(value: int) -> int:
    return value


@each_probe(where=lambda probe: probe.shortcut is not None)
def test_the_decorator_shortcut_above_task_is_refused_naming_the_order(probe: Probe) -> None:
    assert probe.shortcut is not None
    name = probe.shortcut.__name__
    with pytest.raises(TypeError, match=rf"(?s)put it below @task.*@task\n    @{name}"):

        @probe.decorate()
        @task
        def configured(value: int) -> int:
            return value

    with pytest.raises(TypeError, match="put it below @task"):
        probe.shortcut(task(_plain))


@each_probe()
def test_the_session_as_a_decorator_above_task_is_refused_naming_the_order(probe: Probe) -> None:
    with pytest.raises(TypeError, match="put it below @task"):

        @probe.make()
        @task
        def wrong(value: int) -> int:
            return value


@each_probe()
def test_generator_functions_are_refused_at_decoration(probe: Probe) -> None:
    def numbers() -> Iterator[int]:
        yield 1

    async def stream() -> Any:
        yield 1

    decorators = [probe.make()] + ([probe.decorate()] if probe.shortcut is not None else [])
    for decorator in decorators:
        for function in (numbers, stream):
            with pytest.raises(TypeError, match="cannot decorate the generator function"):
                decorator(function)


@each_probe()
async def test_async_functions_stay_coroutine_functions_and_run_inside_the_session(probe: Probe, root: Path) -> None:
    async def body(value: int) -> int:
        await asyncio.sleep(0)
        handle = current_run(probe.kind)
        assert probe.is_active(handle)
        probe.log(handle, value)
        return value

    by_session = probe.make()(body)
    assert inspect.iscoroutinefunction(by_session)
    assert await by_session(1) == 1
    expected = [(1,)]

    if probe.shortcut is not None:
        by_shortcut = probe.decorate()(body)
        assert inspect.iscoroutinefunction(by_shortcut)
        assert await by_shortcut(2) == 2
        expected.append((2,))

    as_task = task(probe.decorate()(body))
    assert isinstance(as_task, AsyncPythonFunctionTask)
    assert await as_task(value=3) == 3
    expected.append((3,))

    assert current_run(probe.kind) is None
    runs = probe.read_back(root)
    assert sorted(run.values for run in runs) == expected
    assert all(run.finished and run.failed is not True for run in runs)


# ------------------------------------------------------------------------------ warnings


def marked_line(mark: str) -> int:
    """The line of this file that ends with ``# (marked line: <mark>)``."""
    lines = Path(__file__).read_text(encoding="utf-8").splitlines()
    (number,) = [n for n, text in enumerate(lines, 1) if text.endswith(f"# (marked line: {mark})")]
    return number


def _points_at(caught: list[warnings.WarningMessage], mark: str) -> None:
    (warning,) = tracking_warnings(caught)
    assert (warning.filename, warning.lineno) == (__file__, marked_line(mark)), str(warning.message)


@each_probe()
def test_a_warning_points_at_the_users_with_decorated_function_or_task(probe: Probe, tmp_path: Path) -> None:
    with probe.broken(tmp_path / "broken") as options:
        with recorded_warnings() as caught:
            with probe.make(**options):  # (marked line: with)
                pass
        _points_at(caught, "with")

        with recorded_warnings() as caught:

            @probe.make(**options)  # (marked line: decorated function)
            def decorated() -> None:
                pass

            decorated()
        _points_at(caught, "decorated function")

        with recorded_warnings() as caught:

            @task  # (marked line: task)
            @probe.decorate(**options)
            def tracked() -> None:
                pass

            tracked()
        _points_at(caught, "task")


@each_probe()
async def test_a_warning_points_at_the_users_async_with_or_async_function(probe: Probe, tmp_path: Path) -> None:
    with probe.broken(tmp_path / "broken") as options:
        with recorded_warnings() as caught:
            async with probe.make(**options):  # (marked line: async with)
                pass
        _points_at(caught, "async with")

        with recorded_warnings() as caught:

            @probe.make(**options)  # (marked line: async function)
            async def decorated() -> None:
                await asyncio.sleep(0)

            await decorated()
        _points_at(caught, "async function")


# ------------------------------------------------------------------------------ secrets


def _spellings(key: str) -> list[bytes]:
    """The key as bytes, hex, and base64 (standard and URL-safe) at each of its three alignments."""
    raw = key.encode()
    found = [raw, raw.hex().encode()]
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(raw[offset:]).rstrip(b"=")
            found.append(text[1:-2])  # the characters that depend on the key only
    return found


@each_probe()
def test_no_secret_in_anything_written_or_printed(
    probe: Probe, tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    key = f"sk-contract-{uuid.uuid4().hex}"  # made at run time: never in a source file a backend uploads
    reads: list[int] = []

    def secret() -> str:
        reads.append(1)
        return key

    if not probe.tracks_runs:  # a profiler has no secret to keep: it refuses one
        with pytest.raises(TypeError, match="secret"):
            probe.make(secret=secret)
        assert reads == []
        return

    monkeypatch.setenv(MODE_ENV_VAR, "offline")
    session = probe.make(secret=secret, mode="online")
    seen: dict[str, Any] = {}

    @task(enable_deck=True)
    def failing() -> None:
        try:
            with session as handle:
                seen["handle"] = handle
                probe.log(handle, 1)
                raise ProbeFailure("the user's block failed")
        except ProbeFailure:
            pass
        seen["decks"] = list(running_task_decks().values())

    with recorded_warnings() as caught:
        failing()
    assert reads, "the secret was never read: the test would prove nothing"
    (run,) = probe.read_back(root)
    assert run.failed is True

    out, err = capfd.readouterr()
    shown = [out, err, *seen["decks"], repr(session), repr(seen["handle"]), str(seen["handle"])]
    shown += [str(warning.message) for warning in caught]
    spellings = _spellings(key)
    for text in shown:
        assert not any(spelling in text.encode() for spelling in spellings)
    written = [path for path in files_under(tmp_path) if any(s in path.read_bytes() for s in spellings)]
    assert written == []


# ------------------------------------------------------------------------------ run modes and ranks
@pytest.fixture
def elastic_rank(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Make this process rank ``n`` of a torch elastic job of 2 nodes x 2 ranks."""

    def become(rank: int) -> None:
        for name, value in {
            "WORLD_SIZE": 4,
            "LOCAL_WORLD_SIZE": 2,
            "RANK": rank,
            "LOCAL_RANK": rank % 2,
            "GROUP_RANK": rank // 2,
        }.items():
            monkeypatch.setenv(name, str(value))

    return become


@each_probe(where=lambda probe: probe.tracks_runs)
def test_each_rank_scope_opens_on_its_ranks_and_the_others_run_untracked(
    probe: Probe, root: Path, elastic_rank: Callable[[int], None]
) -> None:
    opened: dict[tuple[int, str], bool] = {}
    for rank in (1, 2):  # rank 1: node 0, local rank 1; rank 2: node 1, local rank 0
        elastic_rank(rank)
        for scope in ("global", "worker", "rank"):
            with probe.make(rank_scope=scope) as handle:
                opened[(rank, scope)] = handle is not None and probe.is_active(handle)
                if handle is not None:  # a rank that opens nothing gets None, as before
                    probe.log(handle, rank)
    assert opened == {
        (1, "global"): False,
        (1, "worker"): False,
        (1, "rank"): True,
        (2, "global"): False,
        (2, "worker"): True,  # the first rank of its node
        (2, "rank"): True,
    }
    assert sorted(run.values for run in probe.read_back(root)) == [(1,), (2,), (2,)]


@each_probe(where=lambda probe: probe.tracks_runs)
def test_every_run_mode_the_backend_has_offline_records_and_the_others_are_refused(probe: Probe, root: Path) -> None:
    offline = probe.session.run_modes["offline"]
    everywhere = {mode for modes in probe.session.run_modes.values() for mode in modes}
    for value, mode in enumerate(offline, start=1):
        with recorded_warnings() as caught, probe.make(run_mode=mode) as handle:
            probe.log(handle, value)
        assert tracking_warnings(caught) == []
    assert sorted(run.values for run in probe.read_back(root)) == [(value,) for value in range(1, len(offline) + 1)]
    for mode in {"new", "shared", "nested"} - everywhere:
        with pytest.raises(ValueError, match=f"run_mode='{mode}'.*use one of 'auto'"):
            probe.make(run_mode=mode)


@each_probe(
    where=lambda probe: (
        probe.tracks_runs
        and "shared" in probe.session.run_modes["online"]
        and "shared" not in probe.session.run_modes["offline"]
    )
)
def test_a_shared_run_the_backend_cannot_share_offline_keeps_every_writer_with_one_warning(
    probe: Probe, root: Path, elastic_rank: Callable[[int], None]
) -> None:
    with recorded_warnings() as caught:
        for rank in (0, 1, 3):
            elastic_rank(rank)
            with probe.make(run_mode="shared") as handle:
                assert probe.is_active(handle)  # every writer writes: nothing it logs is lost
                probe.log(handle, rank)
    (warning,) = tracking_warnings(caught)
    assert "run_mode='shared' offline" in str(warning.message)
    assert sorted(run.values for run in probe.read_back(root)) == [(0,), (1,), (3,)]
