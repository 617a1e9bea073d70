"""Plain data the core hands to integrations and decks (no behaviour, no imports of the core)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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
    series: Mapping[str, Sequence[tuple[float, float]]] = field(default_factory=dict)
    """Every logged scalar series by name: its ``(step, value)`` points, in logging order."""
    config: Mapping[str, str] = field(default_factory=dict)
    """The run's config or parameters, flattened to ``a/b`` keys, values as text."""
    tags: Sequence[str] = ()
    status: str | None = None
    """How the run ended, in words ("finished", "failed with ValueError"); None: from ``failed``."""
    note: str | None = None
    """Why logged values are missing from the card (not kept locally, not readable), if they are."""
    copied_to: str | None = None
    """Where the run's local data was copied when it closed, to outlive the pod."""
    sharing: str | None = None
    """Who else writes into this run, or which runs it belongs with (run modes), in words."""
