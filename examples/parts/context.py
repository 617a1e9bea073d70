"""Demo part: what a task knows about where it runs, and a session's lifecycle."""

from __future__ import annotations

from flytekit import task

from flyte_ctx_tracking import current_run, execution_context


@task(enable_deck=True)
def context_part() -> str:
    """Show the execution context a session reads, and that nothing is active outside a session."""
    ctx = execution_context()
    where = "a Flyte pod" if ctx.is_remote else "a local run"
    known = ctx.flyte_metadata() or {"(local run)": "no Flyte execution identifiers"}
    lines = [f"running in {where}; rank {ctx.rank} of {ctx.world_size}; attempt {ctx.attempt}"]
    lines += [f"  {key} = {value}" for key, value in known.items()]
    lines.append(f"  active session outside any block: {current_run()!r}")
    return "\n".join(lines)
