"""Demo part: profile only the hot section of a task with memray, numbers on the handle, report in a deck."""

from __future__ import annotations

from flytekit import task

from flyte_ctx_tracking import memray_profile
from flyte_ctx_tracking.decks.memray import format_bytes


def _join(lookup: dict[int, str], keys: range) -> list[tuple[int, str, bytearray]]:
    """The hot section: a join that materializes a payload per row."""
    return [(key, lookup[key], bytearray(4096)) for key in keys]


@task(enable_deck=True)
def memray_part() -> str:
    """Profile a join (not the setup before it) and report what memray saw."""
    lookup = {i: f"name-{i}" for i in range(20_000)}  # setup: not profiled
    with memray_profile("join", memray_html_reporter="flamegraph") as prof:
        rows = _join(lookup, range(0, 20_000, 2))
    top = prof.top_sites[0]
    return "\n".join(
        [
            f"profiled section 'join' ({len(rows)} rows): peak {format_bytes(prof.peak_memory or 0)}, "
            f"{prof.total_allocations} allocations",
            f"  top allocation site: {top.location} ({format_bytes(top.bytes)} in {top.count} allocations)",
            f"  capture file: {prof.path}",
            f"  report: memray {prof.report_kind}, rendered in-process into the deck {prof.deck_title!r}",
        ]
    )
