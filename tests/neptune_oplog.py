"""Read back what neptune 1.x wrote for an offline run: its operation log.

An offline run lives in ``<data dir>/.neptune/offline/run__{uuid}__{pid}__{random}/``: a
``metadata.json`` and the operation log ``data-{n}.log``, one JSON object per line,
``{"obj": {"type": "AssignString", "path": ["flyte", "project"], "value": ...}, "version": n, "at": t}``.
This is what ``neptune sync`` uploads, so what is asserted here is what the Neptune app will show.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SERIES_CLEAR = {"ClearFloatLog", "ClearStringLog", "ClearImageLog"}
_SERIES_LOG = {"LogFloats", "LogStrings", "LogImages"}


@dataclass
class OfflineRun:
    """One offline Neptune run: its folder, ``metadata.json`` and operations in order."""

    path: Path
    metadata: dict[str, Any]
    operations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        """The run's offline UUID (what ``neptune sync --object offline/<uuid>`` takes)."""
        return str(self.metadata["containerId"])

    @property
    def fields(self) -> dict[str, Any]:
        """Every atom field (``Assign*``) with its last assigned value, by ``a/b/c`` path."""
        values: dict[str, Any] = {}
        for op in self.operations:
            name = "/".join(op["path"])
            if op["type"].startswith("Assign"):
                values[name] = op["value"]
            elif op["type"] == "DeleteAttribute":
                values.pop(name, None)
        return values

    def value(self, name: str) -> Any:
        """The last value assigned to field ``name``; KeyError when it was never assigned."""
        return self.fields[name]

    def namespace(self, prefix: str) -> dict[str, Any]:
        """The atom fields under ``prefix/``."""
        return {k: v for k, v in self.fields.items() if k.startswith(prefix.rstrip("/") + "/")}

    def series(self, name: str) -> list[Any]:
        """The values appended to series ``name`` (after its last clear), in order."""
        values: list[Any] = []
        for op in self.operations:
            if "/".join(op["path"]) != name:
                continue
            if op["type"] in _SERIES_CLEAR:
                values = []
            elif op["type"] in _SERIES_LOG:
                values.extend(entry["value"] for entry in op["values"])
        return values

    @property
    def tags(self) -> set[str]:
        """``sys/tags`` after every add and remove."""
        tags: set[str] = set()
        for op in self.operations:
            if op["path"] != ["sys", "tags"]:
                continue
            if op["type"] == "AddStrings":
                tags.update(op["values"])
            elif op["type"] == "RemoveStrings":
                tags.difference_update(op["values"])
            elif op["type"] == "ClearStringSet":
                tags.clear()
        return tags

    @property
    def failed(self) -> bool:
        """``sys/failed`` as Neptune will show it."""
        return bool(self.value("sys/failed"))


def _log_number(path: Path) -> int:
    match = re.search(r"(\d+)", path.stem)
    return int(match.group(1)) if match else 0


def read_run(folder: Path) -> OfflineRun:
    """Read one offline run folder."""
    metadata = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    entries: list[dict[str, Any]] = []
    for log in sorted(folder.glob("data-*.log"), key=_log_number):
        for line in log.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entries.append(json.loads(line))
    entries.sort(key=lambda entry: entry["version"])
    return OfflineRun(folder, metadata, [entry["obj"] for entry in entries])


def offline_runs(root: Path) -> list[OfflineRun]:
    """Every offline run under ``root`` (searched recursively for ``.neptune/offline``), oldest first."""
    folders = [p for p in root.rglob("run__*") if p.is_dir() and p.parent.name == "offline"]
    runs = [read_run(folder) for folder in folders]
    return sorted(runs, key=lambda run: str(run.metadata.get("createdAt", "")))


def only_run(root: Path) -> OfflineRun:
    """The single offline run under ``root``; fails when there is not exactly one."""
    runs = offline_runs(root)
    assert len(runs) == 1, f"expected one offline Neptune run under {root}, found {[r.path for r in runs]}"
    return runs[0]
