"""Reading back what comet_ml wrote: an offline experiment's ``.zip`` archive.

The archive holds ``experiment.json`` (key, project, workspace, tags, and whether an error was
reported) and ``messages.json`` (one JSON message per line: metrics, parameters, "others", code
and environment uploads, captured output). Tests read these files directly, as ``comet upload``
would, instead of asking the client what it thinks it wrote.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CometArchive:
    """One offline experiment as its archive records it."""

    path: Path
    experiment: dict[str, Any]
    messages: list[dict[str, Any]]
    texts: dict[str, bytes]

    @property
    def key(self) -> str:
        return str(self.experiment["offline_id"])

    @property
    def project(self) -> str | None:
        return self.experiment.get("project_name")

    @property
    def workspace(self) -> str | None:
        return self.experiment.get("workspace")

    @property
    def tags(self) -> list[str]:
        return list(self.experiment.get("tags") or [])

    @property
    def error_reported(self) -> bool:
        """Comet's crash record: set by its exception hook, or by the session for a failed block."""
        return bool(self.experiment.get("customer_error_reported"))

    @property
    def error_message(self) -> str | None:
        return self.experiment.get("customer_error_message")

    def payloads(self, kind: str) -> list[dict[str, Any]]:
        return [m["payload"] for m in self.messages if m.get("type") == kind]

    def metrics(self, name: str) -> list[tuple[int | None, Any]]:
        """``(step, value)`` of every logged value of metric ``name``, in order."""
        return [
            (p["metric"].get("step"), p["metric"]["metricValue"])
            for p in self.payloads("metric_msg")
            if p["metric"]["metricName"] == name
        ]

    @property
    def parameters(self) -> dict[str, Any]:
        """Parameters logged by the user (not Comet's auto-logged ones)."""
        return {
            p["param"]["paramName"]: p["param"]["paramValue"]
            for p in self.payloads("parameter_msg")
            if p["param"].get("source") != "auto-logged"
        }

    @property
    def others(self) -> dict[str, Any]:
        return {p["key"]: p["value"] for p in self.payloads("log_other")}

    @property
    def code_files(self) -> list[str]:
        """The source files uploaded as the experiment's code."""
        return [
            p["additional_params"]["fileName"]
            for p in self.payloads("file_upload")
            if p.get("upload_type") == "source_code"
        ]

    def contains(self, text: str) -> bool:
        """True when ``text`` occurs in any file of the archive (decompressed)."""
        needle = text.encode()
        return any(needle in data for data in self.texts.values())


def read_archive(path: Path) -> CometArchive:
    """Open one offline archive."""
    with zipfile.ZipFile(path) as archive:
        texts = {name: archive.read(name) for name in archive.namelist()}
    experiment = json.loads(texts["experiment.json"])
    messages = [json.loads(line) for line in texts.get("messages.json", b"").decode().splitlines() if line.strip()]
    return CometArchive(path=path, experiment=experiment, messages=messages, texts=texts)


def archives(directory: Path) -> list[CometArchive]:
    """Every offline archive under ``directory``, oldest first."""
    paths = sorted(directory.rglob("*.zip"), key=lambda p: p.stat().st_mtime)
    return [read_archive(path) for path in paths]
