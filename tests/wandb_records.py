"""Read back what W&B wrote: the records of a run's ``run-<id>.wandb`` transaction log.

The file is a LevelDB-style log (https://github.com/google/leveldb/blob/main/doc/log_format.md)
behind a 7-byte W&B header: 32 KiB blocks of chunks, each chunk ``crc32 (4) | length (2) | type
(1) | data``, where a record too long for its block is split into FIRST, MIDDLE... LAST chunks.
Every assembled record is a ``wandb.proto.wandb_internal_pb2.Record``.

This is test tooling: it reads files only, and fails loudly on anything it does not understand.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_IDENT = b":W&B"
_MAGIC = 0xBEE1
_FILE_HEADER = struct.Struct("<4sHB")
_CHUNK_HEADER = struct.Struct("<IHB")
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _chunks(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = _FILE_HEADER.size
    while offset + _CHUNK_HEADER.size <= len(data):
        room = _BLOCK - offset % _BLOCK
        if room < _CHUNK_HEADER.size:  # block trailer: zero padding
            offset += room
            continue
        checksum, length, kind = _CHUNK_HEADER.unpack_from(data, offset)
        start = offset + _CHUNK_HEADER.size
        payload = data[start : start + length]
        if checksum == 0 and length == 0 and kind == 0:  # preallocated, never written
            return
        if len(payload) < length:
            raise ValueError(f"truncated chunk at byte {offset}")
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != checksum:
            raise ValueError(f"bad checksum at byte {offset}")
        yield kind, payload
        offset = start + length


def read_records(path: Path) -> list[Any]:
    """Every record of the transaction log at ``path``, in order, as protobuf ``Record`` objects."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = _FILE_HEADER.unpack_from(data, 0)
    if ident != _IDENT or magic != _MAGIC:
        raise ValueError(f"{path} is not a W&B transaction log (header {ident!r} {magic:#x})")
    records = []
    pending = b""
    for kind, payload in _chunks(data):
        if kind == _FULL:
            whole = payload
        elif kind == _FIRST:
            pending = payload
            continue
        elif kind == _MIDDLE:
            pending += payload
            continue
        elif kind == _LAST:
            whole, pending = pending + payload, b""
        else:
            raise ValueError(f"unknown chunk type {kind} in {path}")
        record = wandb_internal_pb2.Record()
        record.ParseFromString(whole)
        records.append(record)
    return records


def _item_value(item: Any) -> Any:
    """The Python value of a history or summary item (typed fields first, then JSON)."""
    for name in ("integer", "number", "boolean", "text"):
        if item.HasField(name):
            return getattr(item, name)
    if item.HasField("none"):
        return None
    if item.HasField("json"):
        return json.loads(item.json)
    return json.loads(item.value_json)


def _item_key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else str(item.key)


@dataclass
class WandbRunFile:
    """The run a transaction log describes, as a user would check it."""

    path: Path
    run_id: str
    project: str
    entity: str
    group: str
    job_type: str
    notes: str
    tags: list[str]
    display_name: str
    config: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None

    @property
    def user_config(self) -> dict[str, Any]:
        """The config without W&B's own ``_wandb`` entry."""
        return {key: value for key, value in self.config.items() if key != "_wandb"}


def read_run(path: Path) -> WandbRunFile:
    """The run recorded in the ``run-*.wandb`` file at ``path`` (or in the run folder ``path``)."""
    if path.is_dir():
        (path,) = path.glob("run-*.wandb")
    run: WandbRunFile | None = None
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    exit_code: int | None = None
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            for item in r.config.update:
                config[_item_key(item)] = json.loads(item.value_json)
            run = WandbRunFile(
                path=path,
                run_id=r.run_id,
                project=r.project,
                entity=r.entity,
                group=r.run_group,
                job_type=r.job_type,
                notes=r.notes,
                tags=list(r.tags),
                display_name=r.display_name,
                config=config,
            )
        elif kind == "config":
            for item in record.config.update:
                config[_item_key(item)] = json.loads(item.value_json)
            for item in record.config.remove:
                config.pop(_item_key(item), None)
        elif kind == "history":
            history.append({_item_key(item): _item_value(item) for item in record.history.item})
        elif kind == "exit":
            exit_code = record.exit.exit_code
    if run is None:
        raise ValueError(f"no run record in {path}")
    run.history = history
    run.exit_code = exit_code
    return run


def find_runs(root: Path) -> list[WandbRunFile]:
    """Every run recorded under ``root``, sorted by run id."""
    return sorted((read_run(p) for p in root.rglob("run-*.wandb")), key=lambda run: run.run_id)
