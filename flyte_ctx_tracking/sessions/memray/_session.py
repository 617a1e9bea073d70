"""memray: profile the memory of just the hot section of a task (or the whole task), with the
report rendered in this process into a Flyte Deck and the numbers on the handle::

    with memray_profile("join", memray_html_reporter="table") as prof:
        out = df.merge(lookup, on="id")
    print(prof.peak_memory, prof.total_allocations, prof.top_sites[:3])

memray allows one tracker per process, so a ``memray_profile`` entered inside an active one joins
the outer capture: it gets the outer handle, whose numbers are filled when the outer block ends.
A tracker started by someone else (pytest-memray, ``memray run``, a ``memray.Tracker`` of your
own) makes the section run unprofiled, with a warning.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..._decorator import SessionDecorator
from ..._session import OpenPlan, ProfilerOptions, Session, SessionUnavailable, log_to_active_trackers, warn
from ..._validate import check_bool, check_positive_int, check_str, file_stem
from ...decks.memray import error_report_html, memray_deck_html
from ._report import (
    HTML_REPORTERS,
    Report,
    ReportOptions,
    next_deck_title,
    parse_reporter_args,
    render_report,
    user_frames,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "DEFAULT_MAX_REPORT_BYTES",
    "MAX_DECKS_PER_SECTION",
    "MAX_DECKS_PER_TASK",
    "AllocationSite",
    "MemrayCapture",
    "memray_profile",
    "memray_profiling",
]

F = TypeVar("F", bound=Callable[..., Any])

MAX_DECKS_PER_SECTION = 3
"""Captures of one section name that get a deck in one task; later ones keep only their numbers."""
MAX_DECKS_PER_TASK = 10
"""memray decks one task shows at most, whatever the section names."""
DEFAULT_MAX_REPORT_BYTES = 20_000_000
"""A report larger than this degrades (temporal flame graph -> flame graph -> table -> summary)."""
MAX_MEMORY_INTERVAL_MS = 3_600_000
"""The longest interval between memory samples a session accepts (memray's C++ side takes an int)."""
TOP_SITES = 10
"""How many allocation sites a handle keeps."""

_DECK_PREFIX = "Memray: "
_TRACKER_TURN = threading.Lock()  # one tracker starts or stops at a time
_FOREIGN_TRACKER = "No more than one Tracker instance can be active"


@dataclass(frozen=True)
class AllocationSite:
    """Where memory alive at the peak was allocated: the innermost frame, its bytes and allocations."""

    location: str
    """``"function at file:line"``, as memray's table shows it."""
    bytes: int
    """Bytes allocated there and still alive at the peak."""
    count: int
    """How many allocations those bytes came from."""


class MemrayCapture:
    """The handle of a ``memray_profile`` block. The numbers are filled when the block ends.

    Attributes:
        name: the section's name (the deck is titled ``"Memray: <name>"``).
        path: the capture file (under ``$FLYTE_CTX_TRACKING_DIR/memray``), or None when unprofiled.
        profiled: False when the section ran unprofiled (another tracker was active, the session
            was disabled, or memray could not start); the numbers then stay None.
        peak_memory: the peak of memory allocated during the capture, in bytes.
        total_allocations: how many allocations the capture recorded.
        top_sites: the allocation sites holding the most memory at the peak, largest first.
        failed: True when the block raised; ``error_type`` names the exception.
        deck_title: the deck this capture got, or None (decks off, outside a task, or the bound on
            decks per task was reached).
        report_kind: what ``html`` holds: ``"flamegraph"``, ``"temporal_flamegraph"``,
            ``"table"``, ``"summary"`` (the report was too large), ``"error"`` (rendering failed).
        report_notes: why the report is not the one asked for, and other remarks.
    """

    def __init__(
        self,
        name: str,
        *,
        path: Path | None = None,
        options: ReportOptions | None = None,
        max_report_bytes: int = DEFAULT_MAX_REPORT_BYTES,
        profiled: bool = True,
    ) -> None:
        self.name = name
        self.path = path
        self.profiled = profiled
        self.closed = False
        self.peak_memory: int | None = None
        self.total_allocations: int | None = None
        self.top_sites: tuple[AllocationSite, ...] = ()
        self.failed = False
        self.error_type: str | None = None
        self.deck_title: str | None = None
        self.report_kind: str | None = None
        self.report_notes: list[str] = []
        self.render_error: str | None = None
        self._options = options or ReportOptions()
        self._max_report_bytes = max_report_bytes
        self._report: Report | None = None
        self._tracker: Any = None

    @property
    def reporter(self) -> str:
        """The memray reporter asked for: ``"flamegraph"`` or ``"table"``."""
        return self._options.reporter

    @property
    def html(self) -> str | None:
        """The self-contained HTML report (no external URLs), rendered on first use after the block.

        None while the block runs and when the section was not profiled. A report that cannot be
        rendered gives a page that says why (and a warning), never an exception.
        """
        if not self.profiled or not self.closed or self.path is None:
            return None
        return self._render().html

    def _render(self) -> Report:
        if self._report is None:
            assert self.path is not None
            try:
                report = render_report(
                    self.path,
                    self._options,
                    max_bytes=self._max_report_bytes,
                    summary=(self.name, self.peak_memory, self.total_allocations, self._site_tuples()),
                )
            except Exception as error:
                what = f"{type(error).__name__}: {error}"
                self.render_error = what
                warn(f"memray_profile {self.name!r}: the report could not be rendered ({what}); the task runs on")
                report = Report.of(error_report_html(self.name, what), "error")
            self._report = report
            self.report_kind = report.kind
            self.report_notes.extend(report.notes)
        return self._report

    def _site_tuples(self) -> list[tuple[str, int, int]]:
        return [(site.location, site.bytes, site.count) for site in self.top_sites]

    def __repr__(self) -> str:
        if not self.profiled:
            return f"MemrayCapture(name={self.name!r}, profiled=False)"
        return (
            f"MemrayCapture(name={self.name!r}, peak_memory={self.peak_memory}, "
            f"total_allocations={self.total_allocations}, path={os.fspath(self.path) if self.path else None!r})"
        )


def _caller_name(depth: int) -> str:
    """The name of the function that created the session, for a section without a name."""
    try:
        name = sys._getframe(depth).f_code.co_name
    except ValueError:
        return "profile"
    return name if name.isidentifier() else "profile"


def _start_in_a_thread_of_its_own(tracker: Any) -> None:
    """Start ``tracker`` from a short-lived thread of its own.

    memray records every thread's full stack, but its reader cuts the stacks of the thread that
    started the tracker by that thread's depth at the start (it hides the frames above a ``with
    Tracker(...)`` written in user code). Started from a session's ``__enter__`` a few frames deep,
    that cut removed the user's own frames, and the flame graph showed nothing of them. Started from
    a thread that ends at once, the cut applies to no frame that ever allocates.
    """
    failures: list[BaseException] = []

    def start() -> None:
        try:
            tracker.__enter__()
        except BaseException as error:  # handed to the caller below
            failures.append(error)

    starter = threading.Thread(target=start, name="memray-start", daemon=True)
    with _TRACKER_TURN:  # memray crashes when trackers start concurrently (sessions in many threads)
        starter.start()
        starter.join()
    if failures:
        raise failures[0]


def _top_sites(reader: Any, native: bool, limit: int) -> tuple[AllocationSite, ...]:
    """Group what is alive at the peak by its innermost frame outside this library, as memray's table does."""
    totals: dict[str, list[int]] = {}
    for record in user_frames(reader.get_high_watermark_allocation_records(merge_threads=True)):
        frames = record.hybrid_stack_trace(max_stacks=1) if native else record.stack_trace(max_stacks=1)
        if frames:
            function, filename, line = frames[0]
            location = f"{function} at {filename}:{line}"
        else:
            location = "???"
        entry = totals.setdefault(location, [0, 0])
        entry[0] += record.size
        entry[1] += record.n_allocations
    ranked = sorted(totals.items(), key=lambda item: item[1][0], reverse=True)[:limit]
    return tuple(AllocationSite(location, size, count) for location, (size, count) in ranked)


class memray_profile(Session[MemrayCapture], kind="memray", display_name="memray", backend="memray", extra="memray"):
    """Profile the memory of a block (``with``/``async with``) or of every call of a function.

    Args:
        name: the section's name: deck title ``"Memray: <name>"`` and metric names. Default: the
            decorated function's name, else the name of the function that created the session.
        native_traces: capture native (C/C++) frames too.
        trace_python_allocators: trace pymalloc allocations individually (slower, more detail).
        follow_fork: keep tracking in forked children.
        memory_interval_ms: how often memray samples the resident set size (the memory graph).
        memray_html_reporter: ``"flamegraph"`` or ``"table"``.
        memray_reporter_args: options of that memray reporter, e.g. ``["--leaks"]``; checked now
            against the options the installed memray's reporter accepts.
        deck: add a deck ``"Memray: <name>"`` when the task has decks on. At most
            ``MAX_DECKS_PER_SECTION`` (3) captures of one name and ``MAX_DECKS_PER_TASK`` (10) in all
            get a deck per task; every handle keeps its numbers.
        log_to_trackers: log ``memray/<name>/peak_memory_bytes`` and
            ``memray/<name>/total_allocations`` to the active tracking runs, if any.
        max_report_bytes: the largest report to embed; a larger one degrades and says so.
    """

    named_after_function: ClassVar[bool] = True

    def __init__(
        self,
        name: str | None = None,
        *,
        native_traces: bool = False,
        trace_python_allocators: bool = False,
        follow_fork: bool = False,
        memory_interval_ms: int = 10,
        memray_html_reporter: str = "flamegraph",
        memray_reporter_args: Sequence[str] | None = None,
        deck: bool = True,
        log_to_trackers: bool = True,
        max_report_bytes: int = DEFAULT_MAX_REPORT_BYTES,
        **options: Unpack[ProfilerOptions],
    ) -> None:
        super().__init__(**options)
        owner = "memray_profile"
        check_str(owner, "name", name, non_empty=True)
        self.name = name
        self._caller = _caller_name(2)
        self.native_traces = check_bool(owner, "native_traces", native_traces)
        self.trace_python_allocators = check_bool(owner, "trace_python_allocators", trace_python_allocators)
        self.follow_fork = check_bool(owner, "follow_fork", follow_fork)
        self.deck = check_bool(owner, "deck", deck)
        self.log_to_trackers = check_bool(owner, "log_to_trackers", log_to_trackers)
        self.memory_interval_ms = check_positive_int(owner, "memory_interval_ms", memory_interval_ms)
        if memory_interval_ms > MAX_MEMORY_INTERVAL_MS:
            raise ValueError(
                f"{owner}: memory_interval_ms={memory_interval_ms!r} is not accepted; memray samples the resident "
                f"set size every 1 to {MAX_MEMORY_INTERVAL_MS} ms (an hour)"
            )
        self.max_report_bytes = check_positive_int(owner, "max_report_bytes", max_report_bytes)
        if memray_html_reporter not in HTML_REPORTERS:
            raise ValueError(
                f"{memray_html_reporter} is not a supported html reporter. Supported: 'flamegraph', 'table'."
            )
        self.options = parse_reporter_args(memray_html_reporter, memray_reporter_args)
        self.memray_html_reporter = memray_html_reporter
        self.memray_reporter_args = list(memray_reporter_args) if memray_reporter_args is not None else None

    @property
    def section(self) -> str:
        """The section's name: ``name``, else the function that created the session."""
        return self.name if self.name is not None else self._caller

    # ------------------------------------------------------------------ backend hooks
    def _reuse_key(self) -> Hashable:
        # memray allows one tracker per process: every memray_profile shares one key, so a nested
        # one joins the capture that is already running.
        return "tracker"

    def _inactive_handle(self) -> MemrayCapture:
        return MemrayCapture(self.section, options=self.options, profiled=False)

    def _open(self, plan: OpenPlan) -> MemrayCapture:
        import memray

        from ... import _flyte
        from ._report import warm_up_reporter

        if self.deck and _flyte.decks_enabled():  # a report will be rendered: its one-time setup, unprofiled
            with _TRACKER_TURN:  # it starts a tracker of its own
                warm_up_reporter("temporal_flamegraph" if self.options.temporal else self.options.reporter)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        path = (
            plan.directory / f"{file_stem(self.section, 'profile')}-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:12]}.bin"
        )
        tracker = memray.Tracker(
            os.fspath(path),
            native_traces=self.native_traces,
            trace_python_allocators=self.trace_python_allocators,
            follow_fork=self.follow_fork,
            memory_interval_ms=self.memory_interval_ms,
        )
        try:
            _start_in_a_thread_of_its_own(tracker)
        except BaseException as error:
            del tracker  # memray finalizes its file when the tracker goes away: before the file goes
            path.unlink(missing_ok=True)  # memray created it before refusing to start
            if not isinstance(error, RuntimeError) or _FOREIGN_TRACKER not in str(error):
                raise
            raise SessionUnavailable(
                f"section {self.section!r} runs unprofiled: another memray tracker is already active in this "
                "process (pytest-memray, `memray run`, a memray.Tracker of your own, or a memray_profile in "
                "another thread), and memray allows only one at a time"
            ) from error
        capture = MemrayCapture(self.section, path=path, options=self.options, max_report_bytes=self.max_report_bytes)
        capture._tracker = tracker
        return capture

    def _offline_data(self, handle: MemrayCapture, plan: OpenPlan) -> list[tuple[Path, str]]:
        path = handle.path
        return [(path, path.name)] if path is not None and path.is_file() else []

    def _close(self, handle: MemrayCapture, plan: OpenPlan, error: BaseException | None) -> None:
        tracker, handle._tracker = handle._tracker, None
        handle.failed = error is not None
        handle.error_type = type(error).__name__ if error is not None else None
        try:
            with _TRACKER_TURN:
                tracker.__exit__(None, None, None)
        finally:
            handle.closed = True
        from memray import FileReader

        assert handle.path is not None
        with FileReader(os.fspath(handle.path)) as reader:
            metadata = reader.metadata
            handle.peak_memory = int(metadata.peak_memory)
            handle.total_allocations = int(metadata.total_allocations)
            handle.top_sites = _top_sites(reader, bool(metadata.has_native_traces), TOP_SITES)
        if self.log_to_trackers:
            log_to_active_trackers(
                {
                    f"memray/{handle.name}/peak_memory_bytes": int(metadata.peak_memory),
                    f"memray/{handle.name}/total_allocations": int(metadata.total_allocations),
                }
            )

    def _deck(self, handle: MemrayCapture, plan: OpenPlan, error: BaseException | None) -> tuple[str, str] | None:
        title, last = next_deck_title(
            _DECK_PREFIX + handle.name, per_section=MAX_DECKS_PER_SECTION, per_task=MAX_DECKS_PER_TASK
        )
        if title is None:
            handle.report_notes.append(
                f"no deck: this task already shows {MAX_DECKS_PER_SECTION} memray decks for {handle.name!r} "
                f"or {MAX_DECKS_PER_TASK} in all"
            )
            return None
        report = handle._render() if handle.path is not None and handle.closed else None
        if report is None:  # closing failed before the capture could be read: say so, don't fail
            what = "the capture could not be read"
            handle.render_error = what
            report = Report.of(error_report_html(handle.name, what), "error")
        if last:
            report.notes.append(
                "later captures of this section (or of any section, past the per-task bound) get no deck; "
                "their handles still have the numbers"
            )
        handle.deck_title = title
        html = memray_deck_html(
            name=handle.name,
            peak=handle.peak_memory,
            total=handle.total_allocations,
            capture=os.fspath(handle.path) if handle.path is not None else None,
            sites=handle._site_tuples(),
            report_pieces=report.escaped_pieces(),
            report_kind=report.kind,
            notes=report.notes,
            failure=handle.render_error,
            error_type=handle.error_type,
        )
        return title, html


class memray_profiling(SessionDecorator, session=memray_profile):
    """Profile the memory of a whole task: ``@task(enable_deck=True)`` above ``@memray_profiling(...)``.

    flytekitplugins-memray's parameters, in its order, checked when the decorator is applied; the
    other keyword arguments are :class:`memray_profile`'s (``name`` defaults to the function's).
    """

    positional: ClassVar[tuple[str, ...]] = (
        "native_traces",
        "trace_python_allocators",
        "follow_fork",
        "memory_interval_ms",
        "memray_html_reporter",
        "memray_reporter_args",
    )
