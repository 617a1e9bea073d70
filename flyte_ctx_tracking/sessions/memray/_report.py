"""memray's reports: the reporter options a session accepts, and rendering a capture in this process.

Reports are rendered here through memray's own reader and reporter classes (no shell, no second
interpreter), with memray's local assets inlined (``--no-web``), so a Flyte console in a closed
network still renders them. A report over the size limit degrades step by step (temporal flame
graph -> flame graph -> table -> a summary of the top allocation sites) and says so.

Nothing here imports memray at module level: it is imported when a report is parsed or rendered.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ... import _flyte
from ...decks.memray import KIND_NAMES, attribute_value, format_bytes, memray_deck_html, summary_report_html

__all__ = [
    "HTML_REPORTERS",
    "Report",
    "ReportOptions",
    "accepted_reporter_options",
    "next_deck_title",
    "parse_reporter_args",
    "render_report",
    "warm_up_reporter",
]

HTML_REPORTERS: tuple[str, ...] = ("flamegraph", "table")
"""The memray reporters that produce HTML."""

# Options of memray's reporter commands that we decide ourselves: where the report goes.
_RESERVED = frozenset({"-o", "--output", "-f", "--force"})

# memray 1.20's reporter options, used only when memray cannot be imported where the decorator is
# applied (registering workflows on a machine without memray). tests/test_memray.py checks this
# table against the parser of the installed memray.
_STATIC_OPTIONS: dict[str, dict[str, bool]] = {
    "flamegraph": {
        "--temporal": False,
        "--leaks": False,
        "--temporary-allocation-threshold": True,
        "--temporary-allocations": False,
        "--split-threads": False,
        "--inverted": False,
        "--max-memory-records": True,
        "--no-web": False,
        "--confidential-files": True,
    },
    "table": {
        "--leaks": False,
        "--temporary-allocation-threshold": True,
        "--temporary-allocations": False,
        "--split-threads": False,
        "--no-web": False,
    },
}


class _StrictParser(argparse.ArgumentParser):
    """An argument parser that raises ``ValueError`` instead of printing usage and exiting."""

    def error(self, message: str) -> Any:  # argparse calls this for every parse error
        raise ValueError(message)


def _static_parser(reporter: str) -> argparse.ArgumentParser:
    parser = _StrictParser(prog=f"memray {reporter}", add_help=False)
    if reporter == "flamegraph":
        parser.add_argument("--temporal", action="store_true", default=False)
    kinds = parser.add_mutually_exclusive_group()
    kinds.add_argument("--leaks", action="store_true", dest="show_memory_leaks", default=False)
    kinds.add_argument("--temporary-allocation-threshold", dest="temporary_allocation_threshold", type=int, default=-1)
    kinds.add_argument("--temporary-allocations", action="store_const", dest="temporary_allocation_threshold", const=1)
    parser.add_argument("--split-threads", action="store_true", default=False)
    parser.add_argument("--no-web", action="store_true", default=False)
    if reporter == "flamegraph":
        parser.add_argument("--inverted", action="store_true", default=False)
        parser.add_argument("--max-memory-records", type=int, default=None)
        parser.add_argument("--confidential-files", choices=["all", "none", "default"], default="default")
    parser.add_argument("results")
    return parser


def _reporter_parser(reporter: str) -> argparse.ArgumentParser:
    """memray's own argument parser for ``memray <reporter>``, or memray 1.20's options without memray."""
    try:
        if reporter == "flamegraph":
            from memray.commands.flamegraph import FlamegraphCommand

            command: Any = FlamegraphCommand()
        else:
            from memray.commands.table import TableCommand

            command = TableCommand()
        parser = _StrictParser(prog=f"memray {reporter}", add_help=False)
        command.prepare_parser(parser)
        return parser
    except ImportError:
        return _static_parser(reporter)


def accepted_reporter_options(reporter: str) -> dict[str, bool]:
    """The options ``memray <reporter>`` accepts, each mapped to whether it takes a value.

    Derived from memray's own argument parser, so it matches the installed memray; the output
    options (``-o``, ``--force``) are left out because the report's destination is ours.
    """
    if reporter not in HTML_REPORTERS:
        raise ValueError(f"{reporter} is not a supported html reporter. Supported: 'flamegraph', 'table'.")
    options: dict[str, bool] = {}
    for action in _reporter_parser(reporter)._actions:
        for option in action.option_strings:
            if option.startswith("--") and option not in _RESERVED:
                options[option] = action.nargs != 0
    return options


@dataclass(frozen=True)
class ReportOptions:
    """What a reporter's arguments ask for, parsed and validated."""

    reporter: str = "flamegraph"
    args: tuple[str, ...] = ()
    leaks: bool = False
    temporal: bool = False
    temporary_threshold: int = -1
    split_threads: bool = False
    inverted: bool = False
    max_memory_records: int | None = None
    confidential_files: str = "default"


def parse_reporter_args(reporter: str, args: Sequence[str] | None) -> ReportOptions:
    """Validate ``memray_reporter_args`` for ``reporter`` and parse them.

    Raises ``ValueError`` for an unsupported reporter, an option the reporter does not accept
    (naming it and the accepted ones), or a bad value; ``TypeError`` when ``args`` is not a list of
    strings.
    """
    if reporter not in HTML_REPORTERS:
        raise ValueError(f"{reporter} is not a supported html reporter. Supported: 'flamegraph', 'table'.")
    if args is None:
        return ReportOptions(reporter=reporter)
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        raise TypeError(
            f"memray_reporter_args must be a list of strings such as ['--leaks'], not {type(args).__name__} {args!r}"
        )
    for arg in args:
        if not isinstance(arg, str):
            raise TypeError(
                f"memray_reporter_args must be a list of strings; {list(args)!r} holds {arg!r}, a {type(arg).__name__}"
            )
    if not args:
        return ReportOptions(reporter=reporter)
    accepted = accepted_reporter_options(reporter)
    listing = ", ".join(f"{name}=N" if takes_value else name for name, takes_value in sorted(accepted.items()))
    for arg in args:
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            if name not in accepted:
                raise ValueError(
                    f"memray_reporter_args: {arg!r} is not an option of memray's {reporter} reporter "
                    f"(memray {_memray_version()}); accepted: {listing}"
                )
    parser = _reporter_parser(reporter)
    try:
        namespace = parser.parse_args([*args, "capture.bin"])
    except ValueError as error:
        raise ValueError(f"memray_reporter_args {list(args)!r} for the {reporter} reporter: {error}") from None
    temporal = bool(getattr(namespace, "temporal", False))
    threshold = int(namespace.temporary_allocation_threshold)
    if temporal and threshold >= 0:
        raise ValueError(
            f"memray_reporter_args {list(args)!r}: memray cannot make a temporal flame graph of temporary allocations"
        )
    return ReportOptions(
        reporter=reporter,
        args=tuple(args),
        leaks=bool(namespace.show_memory_leaks),
        temporal=temporal,
        temporary_threshold=threshold,
        split_threads=bool(getattr(namespace, "split_threads", False)),
        inverted=bool(getattr(namespace, "inverted", False)),
        max_memory_records=getattr(namespace, "max_memory_records", None),
        confidential_files=str(getattr(namespace, "confidential_files", "default")),
    )


def _memray_version() -> str:
    try:
        from importlib.metadata import version

        return version("memray")
    except Exception:
        return "not installed"


# ---------------------------------------------------------------------------------------- rendering
_LIBRARY = str(Path(__file__).resolve().parents[2]) + os.sep  # the flyte_ctx_tracking package


def _is_user_frame(frame: tuple[str, str, int]) -> bool:
    return not str(frame[1]).startswith(_LIBRARY)


class _UserFrames:
    """An allocation record whose stacks leave out this library's frames (a decorator's wrapper), so
    reports and top sites show the user's code. memray's reporters offer no frame filter of their own."""

    __slots__ = ("_record",)

    def __init__(self, record: Any) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        return getattr(self._record, name)

    def stack_trace(self, max_stacks: int | None = None) -> list[Any]:
        frames = [frame for frame in self._record.stack_trace() if _is_user_frame(frame)]
        return frames if max_stacks is None else frames[:max_stacks]

    def hybrid_stack_trace(self, max_stacks: int | None = None) -> list[Any]:
        frames = [frame for frame in self._record.hybrid_stack_trace() if _is_user_frame(frame)]
        return frames if max_stacks is None else frames[:max_stacks]


def user_frames(records: Any) -> list[Any]:
    """``records`` with this library's frames left out of their stacks."""
    return [_UserFrames(record) for record in records]


class _Asset:
    """One of memray's report assets (a script or a style sheet), read once per process, with its
    escaped form for a deck's ``srcdoc`` attribute computed once too."""

    __slots__ = ("_escaped", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._escaped: str | None = None

    @property
    def escaped(self) -> str:
        if self._escaped is None:
            self._escaped = attribute_value(self.text)
        return self._escaped


@dataclass
class Report:
    """A rendered report: its page, what kind it is, and why it is not what was asked for.

    The page is kept in pieces: the few kilobytes rendered for this capture, and memray's assets
    (4.5 MB of scripts every report inlines), shared by every report of the process. A deck then
    escapes only this capture's part.
    """

    pieces: tuple[str | _Asset, ...]
    kind: str
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, html: str, kind: str, notes: list[str] | None = None) -> Report:
        """A report of one piece (a summary, an error page, a report rendered by memray's CLI)."""
        return cls((html,), kind, notes if notes is not None else [])

    @property
    def html(self) -> str:
        """The whole page."""
        return "".join(piece if isinstance(piece, str) else piece.text for piece in self.pieces)

    @property
    def size(self) -> int:
        """The page's length in characters, without building it."""
        return sum(len(piece if isinstance(piece, str) else piece.text) for piece in self.pieces)

    def escaped_pieces(self) -> list[str]:
        """The page as pieces of a double-quoted attribute value (``srcdoc``)."""
        return [attribute_value(piece) if isinstance(piece, str) else piece.escaped for piece in self.pieces]


class _Collector:
    """A text sink for ``print(..., file=)``: keeps the strings (a StringIO copies megabytes twice)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        return None


# Where an asset stands in a rendered page: a marker no report contains (memray escapes NUL in its data).
_ASSET_MARK = "\x00flyte-ctx-tracking-asset:{}\x00"
_ASSET_SPLIT = re.compile("\x00flyte-ctx-tracking-asset:(\\d+)\x00")
_ASSETS: list[_Asset] = []
_ASSET_INDEX: dict[str, int] = {}
_RENDER_LOCK = threading.Lock()  # renders swap memray's `include_file` for the duration


def _asset_marks(include_file: Any) -> Any:
    """An ``include_file`` for memray's templates that reads each asset once per process and puts a
    mark in the page where the asset goes (memray reads them from disk in every render: 15 ms)."""
    from markupsafe import Markup

    def mark(name: str) -> Any:
        index = _ASSET_INDEX.get(name)
        if index is None:
            index = len(_ASSETS)
            _ASSETS.append(_Asset(str(include_file(name))))
            _ASSET_INDEX[name] = index
        return Markup(_ASSET_MARK.format(index))

    return mark


def _pieces(page: str) -> tuple[str | _Asset, ...]:
    parts = _ASSET_SPLIT.split(page)
    return tuple(_ASSETS[int(part)] if number % 2 else part for number, part in enumerate(parts) if part)


@functools.cache
def warm_up_reporter(kind: str) -> None:
    """Render one tiny report of ``kind`` (and of the flame graph it may degrade to), once per process.

    Called before a section's tracker starts: the first report of a process renders several times
    slower than later ones (memray's reporter and template load, the first multi-megabyte page is
    built), so that one-time cost moves to the first entry, outside the profile and the block's exit.
    """
    try:
        import memray

        with tempfile.TemporaryDirectory(prefix="memray-warm-up-") as directory:
            capture = Path(directory) / "warm-up.bin"
            with memray.Tracker(os.fspath(capture)):
                kept = [bytearray(1024) for _ in range(8)]
            del kept
            for template in dict.fromkeys((kind, "flamegraph")):
                reporter = "table" if template == "table" else "flamegraph"
                # The deck's copy is built once too: the assets' escaped forms are kept for later decks.
                report = Report(_render_in_process(capture, ReportOptions(reporter=reporter), template), template)
                memray_deck_html(
                    name="warm-up",
                    peak=0,
                    total=0,
                    capture=None,
                    sites=(),
                    report_pieces=report.escaped_pieces(),
                    report_kind=template,
                )
    except Exception:  # another tracker is active, an older memray: rendering will say what is wrong
        return


def _render_in_process(capture: Path, options: ReportOptions, kind: str) -> tuple[str | _Asset, ...]:
    """One memray report, rendered here through memray's reader and reporter classes, in pieces."""
    from memray import FileReader

    if kind == "table":
        from memray.reporters.table import TableReporter

        factory: Any = TableReporter
    else:
        from memray.reporters.flamegraph import FlameGraphReporter

        factory = FlameGraphReporter
    merge_threads = not options.split_threads
    inverted = options.inverted and kind != "table"  # memray's table has no inverted view
    reader_kwargs: dict[str, Any] = {}
    if options.max_memory_records is not None:
        reader_kwargs["max_memory_records"] = options.max_memory_records
    with FileReader(os.fspath(capture), **reader_kwargs) as reader:
        native = reader.metadata.has_native_traces
        memory_records = tuple(reader.get_memory_snapshots())
        extra: dict[str, Any] = {}
        if kind != "table":
            extra["confidential_files"] = options.confidential_files
        if kind == "temporal_flamegraph":
            if options.leaks:
                records: Any = reader.get_temporal_allocation_records(merge_threads=merge_threads)
                high_water_marks = None
            else:
                records, high_water_marks = reader.get_temporal_high_water_mark_allocation_records(
                    merge_threads=merge_threads
                )
            # memray checks the type of temporal records: those are passed as they are (the only frame
            # of this library that can be on a stack then is a decorator's call of the function).
            reporter = factory.from_temporal_snapshot(
                records,
                memory_records=memory_records,
                native_traces=native,
                high_water_mark_by_snapshot=high_water_marks,
                inverted=inverted,
                **extra,
            )
        else:
            if options.leaks:
                records = reader.get_leaked_allocation_records(merge_threads=merge_threads)
            elif options.temporary_threshold >= 0:
                records = reader.get_temporary_allocation_records(
                    threshold=options.temporary_threshold, merge_threads=merge_threads
                )
            else:
                records = reader.get_high_watermark_allocation_records(merge_threads=merge_threads)
            reporter = factory.from_snapshot(
                user_frames(records),
                memory_records=memory_records,
                native_traces=native,
                merge_threads=merge_threads,
                inverted=inverted,
                **extra,
            )
        out = _Collector()
        from memray.reporters.templates import get_render_environment

        environment = get_render_environment()  # memray's one cached environment
        with _RENDER_LOCK:
            include_file = environment.globals["include_file"]
            environment.globals["include_file"] = _asset_marks(include_file)
            try:
                reporter.render(
                    outfile=out,
                    metadata=reader.metadata,
                    show_memory_leaks=options.leaks,
                    merge_threads=merge_threads,
                    inverted=inverted,
                    no_web=True,
                )
            finally:
                environment.globals["include_file"] = include_file
    parts = out.parts
    while parts and parts[-1] == "\n":  # print()'s newline
        parts.pop()
    return _pieces("".join(parts))


def _render_with_cli(capture: Path, options: ReportOptions) -> str:
    """The fallback for a memray without the reporter API: its CLI, as an argument list."""
    with tempfile.TemporaryDirectory(prefix="memray-report-") as directory:
        output = Path(directory) / "report.html"
        command = [sys.executable, "-m", "memray", options.reporter, "--force", "--output", os.fspath(output)]
        command += [arg for arg in options.args if arg != "--no-web"]
        command += ["--no-web", os.fspath(capture)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"memray {options.reporter} exited with {done.returncode}: {done.stderr.strip()[-500:]}")
        return output.read_text(encoding="utf-8")


def _reporter_api_available() -> bool:
    try:
        from memray.reporters.flamegraph import FlameGraphReporter
        from memray.reporters.table import TableReporter
    except ImportError:
        return False
    return hasattr(FlameGraphReporter, "from_snapshot") and hasattr(TableReporter, "from_snapshot")


def render_report(
    capture: Path,
    options: ReportOptions,
    *,
    max_bytes: int,
    summary: tuple[str, int | None, int | None, Sequence[tuple[str, int, int]]],
) -> Report:
    """Render the report ``options`` ask for, degrading while it is larger than ``max_bytes``.

    ``summary`` is ``(name, peak_memory, total_allocations, top_sites)``: the last resort, a
    report of the numbers alone, which is always small.
    """
    notes: list[str] = []
    if not _reporter_api_available():
        html = _render_with_cli(capture, options)
        if len(html) <= max_bytes:
            return Report.of(html, options.reporter, ["rendered by the memray CLI: this memray lacks the reporter API"])
        notes.append(f"the {options.reporter} report was {format_bytes(len(html))}, over the limit")
        return Report.of(summary_report_html(*summary, notes=notes), "summary", notes)
    kinds: list[str] = []
    if options.reporter == "flamegraph":
        if options.temporal:
            capture_size = capture.stat().st_size
            if capture_size > max_bytes:
                notes.append(
                    f"the temporal flame graph was skipped: the capture is {format_bytes(capture_size)}, "
                    f"over the {format_bytes(max_bytes)} report limit"
                )
            else:
                kinds.append("temporal_flamegraph")
        kinds.append("flamegraph")
    kinds.append("table")
    for kind in kinds:
        report = Report(_render_in_process(capture, options, kind), kind, notes)
        if report.size <= max_bytes:
            if kind != kinds[0] or notes:
                notes.append(f"showing the {KIND_NAMES[kind]} instead")
            return report
        notes.append(
            f"the {KIND_NAMES[kind]} was {format_bytes(report.size)}, over the {format_bytes(max_bytes)} report limit"
        )
    notes.append("showing a summary of the top allocation sites instead")
    return Report.of(summary_report_html(*summary, notes=notes), "summary", notes)


def next_deck_title(base: str, *, per_section: int, per_task: int) -> tuple[str | None, bool]:
    """The title for the next deck of ``base`` in this task, or None once the bounds are reached.

    The first deck is titled ``base``, later ones ``base #2``, ``base #3``... (Flyte keys decks by
    title, so equal titles would overwrite each other). Returns ``(title, is_last)``: ``is_last``
    says no further deck of this section (or of any memray section) will be added.
    """
    names = _flyte.deck_titles()
    prefix = base.split(":", 1)[0] + ":"
    all_memray = sum(1 for name in names if name.startswith(prefix))
    section = sum(1 for name in names if name == base or name.startswith(base + " #"))
    if section >= per_section or all_memray >= per_task:
        return None, False
    title = base if section == 0 else f"{base} #{section + 1}"
    return title, section + 1 >= per_section or all_memray + 1 >= per_task
