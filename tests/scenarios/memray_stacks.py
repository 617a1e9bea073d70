"""Every way of entering a memray profile, in one process: the first capture, later ones, blocks,
decorators, a task, a tracking session around it, another thread. Prints, per form, the frames of
the largest allocation alive at the peak and of the largest allocation overall, as JSON."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import memray
from flytekit import task

from flyte_ctx_tracking import memray_profile, memray_profiling, wandb_session

SIZE = 1 << 20
results: dict[str, Any] = {}


def record(form: str, capture: Any) -> None:
    with memray.FileReader(str(capture.path)) as reader:
        peak = max(reader.get_high_watermark_allocation_records(merge_threads=True), key=lambda r: r.size)
        every = max(reader.get_allocation_records(), key=lambda r: r.size)
        results[form] = {
            "peak": [[function, line] for function, _, line in peak.stack_trace()],
            "all": [[function, line] for function, _, line in every.stack_trace()],
            "top_site": capture.top_sites[0].location if capture.top_sites else None,
            "sites": [site.location for site in capture.top_sites],
            # the flame graph's data holds every frame's file: none of this library's may be there
            "report_has_library_frames": "flyte_ctx_tracking/" in (capture.html or ""),
        }


def allocate_in_with() -> Any:
    with memray_profile("with", deck=False) as capture:
        blob = [bytearray(SIZE) for _ in range(16)]  # ALLOCATES: with
        del blob
    return capture


async def allocate_in_async_with() -> Any:
    async with memray_profile("async_with", deck=False) as capture:
        blob = [bytearray(SIZE) for _ in range(16)]  # ALLOCATES: async_with
        del blob
    return capture


@memray_profile(deck=False)
def decorated_function() -> Any:
    blob = [bytearray(SIZE) for _ in range(16)]  # ALLOCATES: decorated
    del blob
    return memray.FileReader  # anything: the capture is read through current_run below


@task
@memray_profiling(deck=False)
def profiled_task() -> int:
    blob = [bytearray(SIZE) for _ in range(16)]  # ALLOCATES: task
    return len(blob)


def allocate_nested_in_a_tracker() -> Any:
    with wandb_session(project="stacks", mode="offline"):
        with memray_profile("nested", deck=False) as capture:
            blob = [bytearray(SIZE) for _ in range(16)]  # ALLOCATES: nested
            del blob
    return capture


def allocate_in_a_thread(out: list[Any]) -> None:
    with memray_profile("thread", deck=False) as capture:
        blob = [bytearray(SIZE) for _ in range(16)]  # ALLOCATES: thread
        del blob
    out.append(capture)


captures: dict[str, Any] = {}
captures["first"] = allocate_in_with()
captures["async_with"] = asyncio.run(allocate_in_async_with())

seen: list[Any] = []
original_close = memray_profile._close


def remember(self: Any, handle: Any, plan: Any, error: Any) -> None:
    original_close(self, handle, plan, error)
    seen.append(handle)


memray_profile._close = remember  # type: ignore[method-assign]
decorated_function()
captures["decorated"] = seen[-1]
profiled_task()
captures["task"] = seen[-1]
memray_profile._close = original_close  # type: ignore[method-assign]

captures["nested"] = allocate_nested_in_a_tracker()
holder: list[Any] = []
worker = threading.Thread(target=allocate_in_a_thread, args=(holder,))
worker.start()
worker.join()
captures["thread"] = holder[0]
captures["later"] = allocate_in_with()
for form, capture in captures.items():
    record(form, capture)
print("RESULT " + json.dumps(results))
