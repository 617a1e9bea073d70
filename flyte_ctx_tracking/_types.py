"""Plain data the core hands to integrations and decks (no behaviour, no imports of the core)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["RunInfo"]


@dataclass(frozen=True)
class RunInfo:
    """What a tracking session shows about its run in a deck and in the offline warning."""

    backend: str
    fields: Mapping[str, str | None]
    name: str | None = None
    """What tells this run from the task's other runs (its name, else its id): the deck's title."""
    url: str | None = None
    local_path: str | None = None
    sync_command: str | None = None
    failed: bool = False
