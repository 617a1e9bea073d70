"""memray captures whose stacks reach the user's code, for every way of entering a profile, and no
frame of the library among the sites a user reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).parent / "scenarios" / "memray_stacks.py"
FUNCTIONS = {
    "first": "allocate_in_with",
    "later": "allocate_in_with",
    "async_with": "allocate_in_async_with",
    "decorated": "decorated_function",
    "task": "profiled_task",
    "nested": "allocate_nested_in_a_tracker",
    "thread": "allocate_in_a_thread",
}


def _allocating_line(marker: str) -> int:
    for number, line in enumerate(SCENARIO.read_text().splitlines(), start=1):
        if f"# ALLOCATES: {marker}" in line:
            return number
    raise AssertionError(marker)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[list[object]]]]:
    workdir = tmp_path_factory.mktemp("memray-stacks")
    env = {**os.environ, "FLYTE_CTX_TRACKING_DIR": str(workdir / "tracking"), "WANDB_SILENT": "true"}
    done = subprocess.run(
        [sys.executable, str(SCENARIO)], capture_output=True, text=True, cwd=workdir, env=env, timeout=300, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT ") :])  # type: ignore[no-any-return]


@pytest.mark.parametrize("form", list(FUNCTIONS))
def test_the_largest_allocations_stack_reaches_the_users_function_and_line(
    form: str, stacks: dict[str, dict[str, list[list[object]]]]
) -> None:
    marker = {"first": "with", "later": "with"}.get(form, form)
    expected = [FUNCTIONS[form], _allocating_line(marker)]
    for which in ("peak", "all"):
        frames = stacks[form][which]
        functions = [function for function, _ in frames]
        assert FUNCTIONS[form] in functions, (which, frames)
        assert expected in frames or ["<listcomp>", expected[1]] in frames, (which, frames)


@pytest.mark.parametrize("form", list(FUNCTIONS))
def test_no_frame_of_the_library_is_a_top_site_or_in_the_report(
    form: str, stacks: dict[str, dict[str, object]]
) -> None:
    site = stacks[form]["top_site"]
    assert isinstance(site, str) and str(_allocating_line({"first": "with", "later": "with"}.get(form, form))) in site
    assert not [site for site in stacks[form]["sites"] if "flyte_ctx_tracking" in site]  # type: ignore[attr-defined]
    assert stacks[form]["report_has_library_frames"] is False
