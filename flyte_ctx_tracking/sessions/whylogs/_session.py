"""whylogs: ``whylogs_profile`` (data profiles, drift and constraints in a block), the profile type
transformer and the whylogs renderers, on numpy 2.

``with whylogs_profile("transactions") as prof`` yields a :class:`WhylogsProfile`; each
``prof.log(chunk)`` folds a DataFrame chunk (or a dict row) into one growing whylogs profile, so
memory follows the chunk, not the total; ``prof.log(view)`` merges a whole profile in (the shards of
a map task), and ``prof.log(spark_df)`` profiles a PySpark DataFrame on the cluster. When the block
ends the profile is summarized in a deck, compared with ``reference`` (drift deck) and checked
against ``constraints`` (constraints deck; with ``fail_on_constraints=True`` failed constraints
raise :class:`ConstraintsFailedError` after the decks are written). The per-column summary also goes
to the active W&B, Comet or Neptune run, if any.

whylogs is imported only when a profile opens, and always after the numpy-2 step of
``._compat``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..._session import OpenPlan, ProfilerOptions, Session, log_to_active_trackers
from ..._validate import check_bool, check_str, file_stem
from ._spark import is_spark_dataframe
from ._types import ColumnSummary, ConstraintResult, DriftResult

if TYPE_CHECKING:
    from typing_extensions import Unpack
    from whylogs.core import DatasetProfileView

__all__ = ["ConstraintsFailedError", "WhylogsProfile", "WhylogsProfileSession", "whylogs_profile"]

DEFAULT_NAME = "profile"
_ACCEPTED_DATA = (
    "a pandas DataFrame, a dict row (column name -> value), a whylogs DatasetProfileView (a shard's "
    "profile, merged in) or a PySpark DataFrame (profiled on the cluster)"
)
_ACCEPTED_REFERENCE = "a pandas DataFrame, a whylogs DatasetProfileView, or None"
_ACCEPTED_COLUMNS = "column names that are strings, unique, in one level (no MultiIndex)"
_SHOWN_COLUMNS = 5
_ACCEPTED_CONSTRAINTS = (
    "a callable taking the DatasetProfileView and returning whylogs Constraints, a list of whylogs "
    "constraints (MetricConstraint, DatasetConstraint, e.g. from whylogs.core.constraints.factories), "
    "whylogs Constraints, or None"
)


class ConstraintsFailedError(Exception):
    """Raised at the end of a ``whylogs_profile(..., fail_on_constraints=True)`` block whose data
    failed constraints (after the decks were written). Not raised when the block itself raised:
    that exception wins.

    Attributes:
        profile_name: the profile's name.
        failed: the names of the failed constraints.
        results: every constraint's :class:`ConstraintResult`.
    """

    def __init__(
        self, profile_name: str, failed: Sequence[str], results: Sequence[ConstraintResult], reason: str | None = None
    ) -> None:
        self.profile_name = profile_name
        self.failed = list(failed)
        self.results = list(results)
        if reason is not None:
            message = f"whylogs profile {profile_name!r}: the constraints could not be evaluated: {reason}"
        else:
            message = (
                f"whylogs profile {profile_name!r}: {len(self.failed)} of {len(self.results)} constraints failed: "
                + "; ".join(self.failed)
            )
        super().__init__(message)


def _is_dataframe(value: object) -> bool:
    pandas = sys.modules.get("pandas")  # a DataFrame exists only if pandas was imported
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _describe_columns(names: Iterable[object]) -> str:
    """``0 (int), None (NoneType)``: the first few names, with their types, and how many more."""
    names = list(names)
    shown = ", ".join(f"{name!r} ({type(name).__name__})" for name in names[:_SHOWN_COLUMNS])
    more = len(names) - _SHOWN_COLUMNS
    return shown + (f" and {more} more" if more > 0 else "")


def _check_unique(owner: str, names: Sequence[str]) -> None:
    """Refuse repeated column names: whylogs would silently merge them into one column."""
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise ValueError(
            f"{owner}: column names must be unique; the DataFrame repeats "
            f"{', '.join(repr(name) for name in repeated[:_SHOWN_COLUMNS])}"
            f"{f' and {len(repeated) - _SHOWN_COLUMNS} more' if len(repeated) > _SHOWN_COLUMNS else ''} "
            f"(whylogs would merge them into one column). whylogs profiles {_ACCEPTED_COLUMNS}: rename or "
            "drop the duplicates first"
        )


def _check_columns(owner: str, data: Any) -> None:
    """Refuse a DataFrame or dict row whose column names whylogs would lose.

    whylogs accepts any hashable name when it tracks, then cannot serialize the profile (``TypeError``
    for an int, float, None, bool, tuple or Timestamp name; a mix of name types even breaks
    ``track`` with ``KeyError: nan``), and bytes names come back as str; it silently merges
    duplicate names into one column. So every name must be a ``str`` (``numpy.str_`` is one), the
    names unique and the columns flat.

    Raises:
        TypeError: MultiIndex columns, or a name that is not a str.
        ValueError: duplicate names.
    """
    if isinstance(data, Mapping):
        bad = [key for key in data if not isinstance(key, str)]
        if bad:
            raise TypeError(
                f"{owner}: a dict row's keys are its column names and must be strings; got "
                f"{_describe_columns(bad)}. whylogs profiles {_ACCEPTED_COLUMNS}"
            )
        return
    columns = data.columns
    if columns.nlevels > 1:
        raise TypeError(
            f"{owner}: the DataFrame has MultiIndex columns ({_describe_columns(columns)}); whylogs "
            f"profiles {_ACCEPTED_COLUMNS}: flatten them first, e.g. "
            "frame.columns = ['/'.join(map(str, c)) for c in frame.columns]"
        )
    bad = [name for name in columns if not isinstance(name, str)]
    if bad:
        raise TypeError(
            f"{owner}: column names must be strings; the DataFrame has {_describe_columns(bad)}. whylogs "
            f"profiles {_ACCEPTED_COLUMNS} (it cannot save a profile with other names): rename them "
            "first, e.g. frame.rename(columns=str)"
        )
    _check_unique(owner, list(columns))


def _is_profile_view(value: object) -> bool:
    if "whylogs" not in sys.modules:
        return False
    from whylogs.core import DatasetProfileView

    return isinstance(value, DatasetProfileView)


def _is_constraint(value: object) -> bool:
    if "whylogs" not in sys.modules:
        return False
    from ._analysis import CONSTRAINT_TYPES

    return isinstance(value, CONSTRAINT_TYPES)


def _is_constraints(value: object) -> bool:
    if "whylogs" not in sys.modules:
        return False
    from whylogs.core.constraints import Constraints

    return isinstance(value, Constraints)


class WhylogsProfile:
    """The handle of a ``whylogs_profile`` block: log data into it, read the profile back.

    After the block: :attr:`columns` (per-column summary), :attr:`drift` (with a reference),
    :attr:`constraints` (with constraints) and :attr:`path` (the saved profile) are filled in, and
    :meth:`view` still returns the profile, also when the block raised.
    """

    def __init__(self, name: str, *, active: bool = True) -> None:
        self.name = name
        self.active = active
        """False when the session did not profile (disabled, or whylogs failed to start): ``log``
        checks its input and drops it, ``view`` gives an empty profile."""
        self.rows = 0
        """Rows logged so far (a dict row counts one)."""
        self.chunks = 0
        """Calls of :meth:`log` so far."""
        self.closed = False
        self.columns: list[ColumnSummary] | None = None
        self.drift: list[DriftResult] | None = None
        """Per-column drift against the reference, for the columns both have."""
        self.only_in_reference: list[str] = []
        self.only_in_target: list[str] = []
        self.constraints: list[ConstraintResult] | None = None
        self.constraints_error: str | None = None
        self.path: Path | None = None
        self.unprofiled: list[str] = []
        """Why data given to :meth:`log` is missing from the profile: a Spark DataFrame whose
        profiling failed on the cluster (a warning said so; ``fail_on_constraints`` fails the block)."""
        self._profile: Any = None
        self._merged: Any = None  # profiles folded in whole (shards' views, Spark's result)
        self._report_failure: Callable[[str, BaseException], None] | None = None
        self._view: Any = None
        self._built_constraints: Any = None
        self._constraints_exception: BaseException | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open" if self.active else "inactive"
        return f"WhylogsProfile({self.name!r}, {state}, rows={self.rows}, chunks={self.chunks})"

    @property
    def failed_constraints(self) -> list[str]:
        """Names of the constraints that failed (empty before the block ends or without constraints)."""
        return [result.name for result in self.constraints or () if not result.passed]

    def log(self, data: Any) -> None:
        """Fold ``data`` into the profile: a pandas DataFrame (a chunk), a dict row, a whylogs
        ``DatasetProfileView`` (a shard's profile, merged in), or a PySpark DataFrame.

        A PySpark DataFrame is profiled on the cluster with whylogs' Spark functions: the executors
        profile their partitions, and only the profiles come back to the driver. If that Spark job
        fails, ``on_error`` applies (by default a warning; the data is then missing from the profile,
        :attr:`unprofiled` says why, and ``fail_on_constraints`` fails the block).

        Column names must be strings, unique, and in one level (no MultiIndex): whylogs would accept
        other names, then fail to save the profile (or silently merge duplicates). Such data is
        refused whole, before anything is tracked: what was logged before stays in the profile.

        Raises:
            TypeError: ``data`` is anything else, has MultiIndex columns or a column name that is not a str.
            ValueError: ``data`` repeats a column name.
            RuntimeError: the block already ended.
        """
        owner = "WhylogsProfile.log"
        if _is_profile_view(data):
            self._fold(data)
            return
        if is_spark_dataframe(data):
            _check_unique(owner, list(data.columns))  # the schema only: no Spark job
            self._log_spark(data)
            return
        if _is_dataframe(data):
            rows, kwargs = len(data), {"pandas": data}
        elif isinstance(data, Mapping):
            data = dict(data)
            rows, kwargs = 1, {"row": data}
        else:
            raise TypeError(f"{owner} accepts {_ACCEPTED_DATA}; got {type(data).__name__}")
        _check_columns(owner, data)
        if not self.active:
            return
        with self._lock:  # checked under the lock: the block's exit freezes the profile concurrently
            self._check_open()
            self._profile.track(**kwargs)
            self.rows += rows
            self.chunks += 1

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"whylogs profile {self.name!r} is closed: log inside its block")

    def _fold(self, view: DatasetProfileView) -> None:
        """Merge a whole profile into this one."""
        if not self.active:
            return
        from ._analysis import rows_in

        rows = rows_in(view)
        with self._lock:
            self._check_open()
            self._merged = view if self._merged is None else self._merged.merge(view)
            self.rows += rows
            self.chunks += 1

    def _log_spark(self, frame: Any) -> None:
        if not self.active:
            return
        with self._lock:  # fail before a Spark job that could not be kept
            self._check_open()
        from ._spark import failure_summary, profile_spark_dataframe

        try:
            view = profile_spark_dataframe(frame)  # long: not under the lock
        except Exception as error:
            what = "could not profile the PySpark DataFrame on the cluster; it is missing from the profile"
            self.unprofiled.append(f"{what}: {failure_summary(error)}")
            if self._report_failure is None:
                raise
            self._report_failure(what, error)
            return
        self._fold(view)

    def view(self) -> DatasetProfileView:
        """The profile so far as a whylogs ``DatasetProfileView`` (after the block: the final one)."""
        with self._lock:
            if self._view is not None:
                return self._view
            if self._profile is not None:
                return self._current()
        from ._analysis import DatasetProfileView

        return DatasetProfileView.zero()

    def _current(self) -> DatasetProfileView:
        """What was tracked row by row, with the profiles folded in whole (under the lock)."""
        tracked = self._profile.view()
        return tracked if self._merged is None else tracked.merge(self._merged)

    def _freeze(self) -> DatasetProfileView:
        with self._lock:
            self.closed = True
            if self._view is None and self._profile is not None:
                self._view = self._current()
                self._profile = self._merged = None  # the view holds everything; let the profile go
        return self.view()


class WhylogsProfileSession(
    Session[WhylogsProfile], kind="whylogs", display_name="whylogs", backend="whylogs", extra="whylogs"
):
    """A whylogs profile of the data a block logs (``with``/``async with``), or of a function or task
    (as a decorator).

    ``with whylogs_profile("transactions") as prof`` yields a :class:`WhylogsProfile`: call
    ``prof.log(chunk)`` for each DataFrame chunk or dict row (they fold into one profile, so memory
    follows the chunk), for each shard's ``DatasetProfileView`` (merged in) or for a PySpark DataFrame
    (profiled in the executors), and ``prof.view()`` for the ``DatasetProfileView`` (a task may return
    it: it is a Flyte type). Inside, ``current_run("whylogs")`` returns the handle. When the block ends,
    also when it raised (the exception then propagates unchanged), the profile is saved under
    ``$FLYTE_CTX_TRACKING_DIR/whylogs/`` and summarized in decks. When it cannot be saved (a read-only
    working directory, a full disk) a warning says so and :attr:`WhylogsProfile.path` stays None; the
    profile is still summarized and its constraints judged. Column names must be strings, unique and
    flat: ``prof.log`` refuses other data whole, before tracking any of it.

    Args:
        name: the profile's name in decks, files and tracker metrics. Default: the decorated
            function's name, else the task's name, else ``"profile"``.
        reference: a pandas DataFrame or a ``DatasetProfileView`` to compare with: adds a drift deck
            (KS test for numbers, chi-square for the rest) and :attr:`WhylogsProfile.drift`.
        constraints: a callable taking the ``DatasetProfileView`` and returning whylogs
            ``Constraints``, or a list of whylogs constraints (``whylogs.core.constraints.factories``,
            ``MetricConstraint``...) to build on the view. Adds a constraints deck and
            :attr:`WhylogsProfile.constraints`. A constraint on a column that was never logged fails.
        fail_on_constraints: raise :class:`ConstraintsFailedError`, naming the failed constraints,
            after the decks are written (not when the block itself raised: its exception wins).
        deck: add the decks (when the task's decks are on).
        interactive: append whylogs' own interactive reports, folded, below the decks' tables. They
            load their scripts from public CDNs and stay blank without internet access.
        log_to_trackers: log the per-column summary (``whylogs/<name>/<column>/count``,
            ``null_count``, ``mean``, ``min``, ``max``) to the active W&B, Comet or Neptune run.
        mode: ``"disabled"`` turns profiling off (``log`` drops data, ``view`` is empty); the other
            modes profile. ``FLYTE_CTX_TRACKING_MODE`` overrides it.
        on_error: what a failure of whylogs itself does: ``"warn"`` (the block runs on) or ``"raise"``.
        directory: where profiles are saved; default ``$FLYTE_CTX_TRACKING_DIR/whylogs``.

    Raises:
        TypeError: a name, reference, constraint or flag of the wrong type; a reference DataFrame
            with a column name that is not a str (or MultiIndex columns).
        ValueError: ``fail_on_constraints=True`` without constraints, an unknown ``mode`` or
            ``on_error``; a reference DataFrame repeating a column name.
    """

    named_after_function: ClassVar[bool] = True
    works_without_directory: ClassVar[bool] = True
    telemetry_off: ClassVar[Mapping[str, str]] = {"WHYLOGS_NO_ANALYTICS": "1"}

    name: str | None
    reference: Any
    constraints: Any
    fail_on_constraints: bool
    interactive: bool
    log_to_trackers: bool

    def __init__(
        self,
        name: str | None = None,
        *,
        reference: Any = None,
        constraints: Any = None,
        fail_on_constraints: bool = False,
        deck: bool = True,
        interactive: bool = True,
        log_to_trackers: bool = True,
        **options: Unpack[ProfilerOptions],
    ) -> None:
        super().__init__(**options)
        owner = "whylogs_profile"
        check_str(owner, "name", name, non_empty=True)
        if reference is not None and not (_is_dataframe(reference) or _is_profile_view(reference)):
            raise TypeError(f"{owner}: reference must be {_ACCEPTED_REFERENCE}; got {type(reference).__name__}")
        if _is_dataframe(reference):
            _check_columns(f"{owner}: reference", reference)
        if isinstance(constraints, (list, tuple)):
            bad = [c for c in constraints if not _is_constraint(c)]
            if bad:
                raise TypeError(
                    f"{owner}: constraints must be {_ACCEPTED_CONSTRAINTS}; the list holds {type(bad[0]).__name__}"
                )
            constraints = list(constraints)
        elif constraints is not None and not (callable(constraints) or _is_constraints(constraints)):
            raise TypeError(f"{owner}: constraints must be {_ACCEPTED_CONSTRAINTS}; got {type(constraints).__name__}")
        for flag, value in (
            ("fail_on_constraints", fail_on_constraints),
            ("deck", deck),
            ("interactive", interactive),
            ("log_to_trackers", log_to_trackers),
        ):
            check_bool(owner, flag, value)
        if fail_on_constraints and not constraints:
            raise ValueError(f"{owner}: fail_on_constraints=True needs constraints to check; none were given")
        self._keep(locals())
        self._reference_view: Any = None
        self._reference_lock = threading.Lock()

    # ------------------------------------------------------------------ helpers
    def _name_for(self, plan: OpenPlan | None) -> str:
        if self.name is not None:
            return self.name
        task = plan.context.task_name if plan is not None else None
        return task.rsplit(".", 1)[-1] if task else DEFAULT_NAME

    def _reference(self) -> Any:
        """The reference as a profile view, profiled once per session."""
        with self._reference_lock:
            if self._reference_view is None:
                from ._analysis import view_of

                self._reference_view = view_of(self.reference)
            return self._reference_view

    # ------------------------------------------------------------------ backend hooks
    def _inactive_handle(self) -> WhylogsProfile:
        return WhylogsProfile(self._name_for(None), active=False)

    def _open(self, plan: OpenPlan) -> WhylogsProfile:
        if "flytekit" in sys.modules:  # a task may return the view: register the type (flytekit's entry
            from . import _transformer  # noqa: F401  point does it when flytekit is imported later)
        from ._analysis import DatasetProfile
        from ._compat import prepare_whylogs

        prepare_whylogs()  # once per process, under a lock: many threads' first profiles cannot deadlock
        handle = WhylogsProfile(self._name_for(plan))
        handle._profile = DatasetProfile()
        handle._report_failure = lambda what, error: self._backend_failure(what, error, plan.secrets)
        return handle

    def _offline_data(self, handle: WhylogsProfile, plan: OpenPlan) -> list[tuple[Path, str]]:
        path = handle.path  # copied when asked (offline_copy=): a profile is often a task's output anyway
        return [(path, path.name)] if path is not None and path.is_file() else []

    def _close(self, handle: WhylogsProfile, plan: OpenPlan, error: BaseException | None) -> None:
        from . import _analysis as report

        view = handle._freeze()
        failures: list[Exception] = []

        def step(function: Callable[[], None]) -> None:
            try:
                function()
            except Exception as step_error:
                failures.append(step_error)

        def summarize() -> None:
            handle.columns = report.column_summaries(view)

        def save() -> None:
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.6f}"[1:]
            run = f".{file_stem(plan.run_id, DEFAULT_NAME)}" if plan.run_id else ""
            path = plan.directory / f"{file_stem(handle.name, DEFAULT_NAME)}{run}.{stamp}.bin"
            data = view.serialize()
            # Written aside, then renamed: a failed write (a full disk) leaves no truncated profile.
            partial = path.with_name(f".{path.name}.partial")
            try:
                partial.write_bytes(data)
                os.replace(partial, path)
            except BaseException:
                with suppress(OSError):
                    partial.unlink(missing_ok=True)
                raise
            handle.path = path

        def drift() -> None:
            handle.drift, handle.only_in_reference, handle.only_in_target = report.drift_results(
                view, self._reference()
            )

        def check() -> None:
            reference = self._reference() if self.reference is not None else None
            try:
                handle.constraints, handle._built_constraints = report.evaluate_constraints(
                    self.constraints, view, reference
                )
            except Exception as check_error:
                handle.constraints_error = f"{type(check_error).__name__}: {check_error}"
                handle._constraints_exception = check_error
                if not self.fail_on_constraints:  # with it, the verdict raises instead of a warning
                    raise

        step(summarize)
        step(save)
        if self.reference is not None:
            step(drift)
        if self.constraints is not None:
            step(check)
        if self.log_to_trackers and handle.columns:
            log_to_active_trackers(report.tracker_metrics(handle.name, handle.columns))
        if failures:
            raise failures[0]

    def _deck(
        self, handle: WhylogsProfile, plan: OpenPlan, error: BaseException | None
    ) -> list[tuple[str, str]] | None:
        from ...decks import whylogs as html
        from . import _analysis as report

        view = handle.view()

        def interactive(build: Callable[[], str]) -> str | None:
            if not self.interactive:
                return None
            try:
                return build()
            except Exception:  # whylogs' own report is a bonus: the table above it is the deck
                return None

        decks = [
            (
                f"whylogs: {handle.name}",
                html.profile_summary_html(
                    handle.name,
                    handle.columns if handle.columns is not None else report.column_summaries(view),
                    rows=handle.rows,
                    chunks=handle.chunks,
                    error=error,
                    interactive_html=interactive(lambda: report.interactive_summary_html(view)),
                ),
            )
        ]
        if self.reference is not None and handle.drift is not None:
            decks.append(
                (
                    f"whylogs drift: {handle.name}",
                    html.drift_html(
                        handle.name,
                        handle.drift,
                        only_in_reference=handle.only_in_reference,
                        only_in_target=handle.only_in_target,
                        interactive_html=interactive(lambda: report.interactive_drift_html(view, self._reference())),
                    ),
                )
            )
        if self.constraints is not None:
            built = handle._built_constraints
            decks.append(
                (
                    f"whylogs constraints: {handle.name}",
                    html.constraints_html(
                        handle.name,
                        handle.constraints or [],
                        error=handle.constraints_error,
                        interactive_html=interactive(lambda: report.interactive_constraints_html(built))
                        if built is not None
                        else None,
                    ),
                )
            )
        return decks

    def _verdict(self, handle: WhylogsProfile, plan: OpenPlan) -> None:
        if not self.fail_on_constraints:
            return
        if handle.constraints_error is not None:
            raise ConstraintsFailedError(
                handle.name, [], [], reason=handle.constraints_error
            ) from handle._constraints_exception
        if handle.constraints is None:  # never evaluated (closing failed before): do not pass unchecked data
            raise ConstraintsFailedError(handle.name, [], [], reason="the profile could not be closed")
        if handle.unprofiled:  # the constraints judged part of the data: do not pass the rest unchecked
            raise ConstraintsFailedError(handle.name, [], [], reason="; ".join(handle.unprofiled))
        if handle.failed_constraints:
            raise ConstraintsFailedError(handle.name, handle.failed_constraints, handle.constraints)


whylogs_profile = WhylogsProfileSession
"""The public name of :class:`WhylogsProfileSession`: ``with whylogs_profile(...) as handle:``."""
