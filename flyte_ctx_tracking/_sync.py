"""``flyte-ctx-tracking sync``: find every offline run under a folder or a copy prefix, and upload each.

Each integration finds and uploads its own runs with its own client
(:meth:`~flyte_ctx_tracking.TrackingSession._find_offline`, ``_upload_offline``); what is written once
here is the rest: where to look (a local folder, or a prefix flytekit reads, downloaded first),
keys (the sessions' own resolution, or a file named by an option, never a key on the command
line), what was uploaded before (a record beside the data, so a second run skips it), progress, the
final table and the exit status. Local data is never deleted.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _flyte
from ._offline import OfflineRun, UploadTarget
from ._registry import integrations
from ._secrets import redact
from ._session import TrackingSession, describe_exception, tracking_root

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["RECORD_FILE", "SyncResult", "main", "sync_offline_runs"]

RECORD_FILE = ".flyte-ctx-tracking-synced.json"
"""The record of uploaded runs, beside the data synced (in the download cache for a remote prefix)."""
CACHE_ENV_VAR = "FLYTE_CTX_TRACKING_SYNC_CACHE"
UPLOADED, UPLOADED_BEFORE, FAILED, NO_KEY, WOULD_UPLOAD = "uploaded", "uploaded before", "failed", "no key", "to upload"


@dataclass(frozen=True)
class SyncResult:
    """What happened to one offline run."""

    run: OfflineRun
    status: str
    """``uploaded``, ``uploaded before`` (skipped), ``failed``, ``no key``, or ``to upload`` (a dry run)."""
    url: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        """False for a run that should have been uploaded and was not."""
        return self.status not in (FAILED, NO_KEY)


# ------------------------------------------------------------------------------ where to look


def _is_remote(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def _download(prefix: str) -> Path:
    """A local copy of a remote prefix (a cache folder per prefix, refreshed on every sync)."""
    cache_root = Path(os.environ.get(CACHE_ENV_VAR) or Path(tempfile.gettempdir()) / "flyte-ctx-tracking-sync")
    folder = cache_root / hashlib.sha256(prefix.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    _flyte.download(prefix, folder / "data")
    return folder


def _local_root(source: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    """``(folder to search, folder of the record)`` for a source."""
    if source is None:
        root = tracking_root()
        return root, root
    text = os.fspath(source)
    if _is_remote(text):
        folder = _download(text)
        return folder / "data", folder
    root = Path(text.removeprefix("file://")).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"flyte-ctx-tracking sync: {text!r} is not a folder")
    return root, root


# ------------------------------------------------------------------------------ the record


class _Record:
    """Runs uploaded before, by identity, kept in a JSON file written after each upload."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / RECORD_FILE
        try:
            self.entries: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}

    def url(self, run: OfflineRun) -> str | None:
        entry = self.entries.get(run.identity)
        return entry.get("url") if isinstance(entry, dict) else None

    def has(self, run: OfflineRun) -> bool:
        return run.identity in self.entries

    def add(self, run: OfflineRun, url: str | None) -> None:
        self.entries[run.identity] = {"kind": run.kind, "url": url, "uploaded_at": time.time()}
        staged = self.path.with_suffix(f".{os.getpid()}.tmp")
        staged.write_text(json.dumps(self.entries, indent=1, sort_keys=True), encoding="utf-8")
        staged.replace(self.path)


# ------------------------------------------------------------------------------ sync


def _sessions(backends: Sequence[str] | None) -> dict[str, TrackingSession[Any]]:
    """A default session of each tracking integration (of ``backends`` only, when given)."""
    known = {kind: i for kind, i in integrations().items() if issubclass(i.session_class, TrackingSession)}
    chosen = list(backends) if backends else sorted(known)
    unknown = [kind for kind in chosen if kind not in known]
    if unknown:
        raise ValueError(
            f"flyte-ctx-tracking sync: --backend {', '.join(unknown)} is not a tracker; "
            f"use one of {', '.join(sorted(known))}"
        )
    sessions: dict[str, TrackingSession[Any]] = {}
    for kind in chosen:
        session = known[kind].session_class()
        try:
            session._require_backend()
        except ImportError as error:
            if backends:  # asked for by name: say what to install
                raise ValueError(f"flyte-ctx-tracking sync: {error}") from error
            continue  # not installed here: it cannot have runs to upload from this machine
        sessions[kind] = session
    return sessions


def sync_offline_runs(
    source: str | os.PathLike[str] | None = None,
    *,
    backends: Sequence[str] | None = None,
    dry_run: bool = False,
    key_files: Mapping[str, str | os.PathLike[str]] | None = None,
    options: Mapping[str, Mapping[str, str]] | None = None,
    console: Console | None = None,
) -> list[SyncResult]:
    """Upload every offline run under ``source`` that was not uploaded before; return what happened.

    Args:
        source: a folder (default: the data directory, ``$FLYTE_CTX_TRACKING_DIR``) or a prefix
            flytekit reads (``s3://...``: the sessions' copy prefix), downloaded to a cache first.
        backends: only these kinds (``"wandb"``, ``"comet"``, ``"neptune"``, ``"mlflow"``).
        dry_run: list what would be uploaded, upload nothing, touch no network.
        key_files: a file holding the key, by kind; otherwise each backend's own variable or login.
        options: backend options by kind (``{"neptune": {"project": "ws/p"}, "mlflow": {"tracking_uri": ...}}``).
        console: where progress and the table go (a ``rich`` console; default: stderr and stdout).
    """
    from rich.console import Console

    out = console or Console()
    sessions = _sessions(backends)
    root, record_folder = _local_root(source)
    record = _Record(record_folder)
    found = [run for kind, session in sessions.items() for run in type(session)._find_offline(root)]
    results: list[SyncResult] = []
    pending: list[OfflineRun] = []
    for run in found:
        if record.has(run):
            results.append(SyncResult(run, UPLOADED_BEFORE, record.url(run)))
        elif dry_run:
            results.append(SyncResult(run, WOULD_UPLOAD))
        else:
            pending.append(run)
    # Every key is settled before the first upload: a backend without one is said once, and never
    # reaches the network.
    targets: dict[str, UploadTarget] = {}
    missing: dict[str, str] = {}
    for kind in dict.fromkeys(run.kind for run in pending):
        target = _target(sessions[kind], (key_files or {}).get(kind), (options or {}).get(kind, {}))
        if isinstance(target, str):
            count = sum(run.kind == kind for run in pending)
            out.print(f"{sessions[kind].display_name}: {target}: its {count} offline run(s) are not uploaded")
            missing[kind] = target
        else:
            targets[kind] = target
    results.extend(_upload_all(pending, sessions, targets, missing, record, out))
    order = {id(run): index for index, run in enumerate(found)}
    results.sort(key=lambda result: order[id(result.run)])
    _print_table(results, root, out, dry_run=dry_run)
    return results


def _target(
    session: TrackingSession[Any], key_file: str | os.PathLike[str] | None, options: Mapping[str, str]
) -> UploadTarget | str:
    key: str | None = None
    if key_file is not None:
        try:
            key = Path(key_file).read_text(encoding="utf-8").strip() or None
        except OSError as error:
            return f"the key file {os.fspath(key_file)!r} cannot be read ({type(error).__name__})"
        if key is None:
            return f"the key file {os.fspath(key_file)!r} is empty"
    return session._upload_target(key, options)


def _upload_all(
    pending: list[OfflineRun],
    sessions: Mapping[str, TrackingSession[Any]],
    targets: Mapping[str, UploadTarget],
    missing: Mapping[str, str],
    record: _Record,
    out: Console,
) -> Iterator[SyncResult]:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    uploadable = [run for run in pending if run.kind in targets]
    with Progress(*columns, console=out, transient=False) as progress:
        overall = progress.add_task("all runs", total=len(uploadable) or 1, completed=0 if uploadable else 1)
        for run in pending:
            if run.kind not in targets:
                yield SyncResult(run, NO_KEY, message=missing.get(run.kind))
                continue
            session, target = sessions[run.kind], targets[run.kind]
            bar = progress.add_task(f"{session.display_name}: {run.label}", total=1.0)
            try:
                url = session._upload_offline(run, target, functools.partial(_advance, progress, bar))
            except Exception as error:
                message = redact(describe_exception(error), *(k for k in (target.key,) if k))
                progress.update(bar, description=f"{session.display_name}: {run.label} [red]failed[/]")
                yield SyncResult(run, FAILED, message=message)
            else:
                progress.update(bar, completed=1.0)
                record.add(run, url)
                yield SyncResult(run, UPLOADED, url)
            progress.advance(overall)


def _advance(progress: Any, bar: Any, done: float) -> None:
    progress.update(bar, completed=max(0.0, min(1.0, done)))


def _print_table(results: Sequence[SyncResult], root: Path, out: Console, *, dry_run: bool) -> None:
    from rich.table import Table

    title = f"offline runs under {root}" + (" (dry run: nothing uploaded)" if dry_run else "")
    table = Table(title=title)
    for column in ("run", "backend", "status", "URL or reason"):
        table.add_column(column, overflow="fold")
    names = {kind: integration.display_name for kind, integration in integrations().items()}
    for result in results:
        table.add_row(
            result.run.label,
            names.get(result.run.kind, result.run.kind),
            result.status,
            result.url or result.message or "",
        )
    if not results:
        table.add_row("(none found)", "", "", "")
    out.print(table)


# ------------------------------------------------------------------------------ the command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flyte-ctx-tracking", description="Tools for flyte-ctx-tracking's local data."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser(
        "sync",
        help="upload every offline run under a folder or a copy prefix",
        description=(
            "Find every offline run (W&B, Comet, Neptune, MLflow) under SOURCE and upload each with the "
            "backend's own client. Keys come from each backend's variable (WANDB_API_KEY, COMET_API_KEY, "
            "NEPTUNE_API_TOKEN, MLFLOW_TRACKING_TOKEN) or saved login, or from a file named with --key-file; "
            "never from the command line. Runs uploaded before are skipped; local data is never deleted."
        ),
    )
    command.add_argument("source", nargs="?", help="a folder (default: $FLYTE_CTX_TRACKING_DIR) or a prefix (s3://...)")
    command.add_argument(
        "--backend", action="append", dest="backends", metavar="KIND", help="only this backend (repeatable)"
    )
    command.add_argument("--dry-run", action="store_true", help="list what would be uploaded; upload nothing")
    command.add_argument(
        "--key-file", action="append", default=[], metavar="KIND=PATH", help="read KIND's key from PATH"
    )
    command.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KIND.NAME=VALUE",
        help="a backend option, e.g. neptune.project=ws/p",
    )
    command.add_argument("--mlflow-tracking-uri", help="the MLflow server to upload to (default: $MLFLOW_TRACKING_URI)")
    return parser


def _pairs(values: Sequence[str], flag: str, parser: argparse.ArgumentParser) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            parser.error(f"{flag} {value!r} is not NAME=VALUE")
        pairs[name] = rest
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    """The ``flyte-ctx-tracking`` command; returns the exit status (1 when any run was not uploaded)."""
    parser = _parser()
    arguments = parser.parse_args(argv)
    options: dict[str, dict[str, str]] = {}
    for name, value in _pairs(arguments.option, "--option", parser).items():
        kind, dot, option = name.partition(".")
        if not dot or not option:
            parser.error(f"--option {name}=... is not KIND.NAME=VALUE")
        options.setdefault(kind, {})[option] = value
    if arguments.mlflow_tracking_uri:
        options.setdefault("mlflow", {})["tracking_uri"] = arguments.mlflow_tracking_uri
    try:
        results = sync_offline_runs(
            arguments.source,
            backends=arguments.backends,
            dry_run=arguments.dry_run,
            key_files=_pairs(arguments.key_file, "--key-file", parser),
            options=options,
        )
    except (ValueError, FileNotFoundError) as error:
        print(error, file=sys.stderr)
        return 2
    return 0 if all(result.ok for result in results) else 1
