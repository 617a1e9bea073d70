"""What ``flyte-ctx-tracking sync`` and the integrations say to each other about offline runs.

An integration finds its offline runs in a folder (:meth:`~flyte_ctx_tracking.TrackingSession._find_offline`)
and uploads one (:meth:`~flyte_ctx_tracking.TrackingSession._upload_offline`) with its own client;
the sync command around them is written once (:mod:`._sync`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["OfflineRun", "Progress", "UploadTarget"]


@dataclass(frozen=True)
class OfflineRun:
    """One offline run found on disk."""

    kind: str
    """The integration's kind (``"wandb"``...)."""
    path: Path
    """The file or folder the backend's upload takes."""
    label: str
    """How the run is named in progress and the table (its name, id or folder)."""
    key: str = ""
    """What identifies the run in the record of uploads (default: its path); a store holding several
    runs (MLflow's) gives each its own."""

    @property
    def identity(self) -> str:
        """The run's identity in the record of what was uploaded."""
        return self.key or str(self.path)


@dataclass(frozen=True)
class UploadTarget:
    """Where and as whom to upload: the key (never printed) and backend options (a project...)."""

    key: str | None = field(default=None, repr=False)
    options: Mapping[str, str] = field(default_factory=dict)


Progress = Callable[[float], None]
"""Called by an upload with how much of the run is done, from 0 to 1."""
