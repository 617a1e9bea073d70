"""``flyte-ctx-tracking sync`` with W&B's, Comet's and Neptune's online clients replaced by recorders.

Usage: ``sync_recorded.py RECORDING -- <sync arguments>``. Only the calls that would reach a
server are replaced (they cannot run here); everything before them is the real code: discovery,
keys, the record of uploads, progress and the table. Each recorder appends one JSON line to
RECORDING and does what the real client does to the files on success (W&B writes its ``.synced``
marker, Neptune deletes the folder it uploaded).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

recording = Path(sys.argv[1])
arguments = sys.argv[sys.argv.index("--") + 1 :]


def record(**call: Any) -> None:
    with recording.open("a", encoding="utf-8") as file:
        file.write(json.dumps(call, default=str) + "\n")


def wandb_sync(paths: list[Path], **options: Any) -> None:
    import wandb

    settings = wandb.setup().settings
    record(backend="wandb", paths=[str(p) for p in paths], options=options, api_key=settings.api_key)
    for path in paths:
        for log in Path(path).glob("run-*.wandb"):
            log.with_name(log.name + ".synced").write_text("")
            print(f"wandb: View run x at https://wandb.example/ml/fraud/runs/{log.stem[4:]}", file=sys.stderr)


def comet_upload(offline_archive_path: str, api_key: str, force_upload: bool, **options: Any) -> bool:
    record(backend="comet", path=offline_archive_path, api_key=api_key, force_upload=force_upload, options=options)
    return True


class NeptuneBackend:
    def __init__(self, credentials: Any) -> None:
        self.token = credentials.api_token


def neptune_sync(*, backend: NeptuneBackend, base_path: Path, project_name: str, object_names: list[str]) -> None:
    record(backend="neptune", base_path=str(base_path), project=project_name, objects=object_names, token=backend.token)
    for name in object_names:
        for folder in (Path(base_path) / "offline").glob(f"run__{name.split('/', 1)[1]}__*"):
            shutil.rmtree(folder)


def main() -> int:
    import comet_ml.offline
    import neptune.internal.backends.hosted_neptune_backend as hosted
    from neptune.cli.sync import SyncRunner
    from wandb.cli import beta_sync

    beta_sync.sync = wandb_sync
    comet_ml.offline.upload_single_offline_experiment = comet_upload
    hosted.HostedNeptuneBackend = NeptuneBackend  # type: ignore[misc,assignment]
    SyncRunner.sync_selected = staticmethod(neptune_sync)  # type: ignore[method-assign,assignment]

    from flyte_ctx_tracking._sync import main as sync_main

    return sync_main(arguments)


if __name__ == "__main__":
    raise SystemExit(main())
