"""``streamrec stream --reset-offsets earliest|latest``: resume a stream whose topic no longer matches it.

When a topic was recreated or the broker lost data, the job stops with ``OffsetMismatchError``
rather than guess where to go on. This resets only the offsets, at a point the operator chose:

- a new checkpoint starts from the topic's earliest or latest offsets, resolved now;
- the per-user state (features and the event ids inside each user's watermark) becomes the base
  of the new state store, so features continue and duplicates are still dropped (re-read events
  behind a user's watermark go to the DLQ as ``late_event``, as any late event);
- the old checkpoint and the stats move aside to ``checkpoint-<UTC time>`` beside it (a checkpoint on an
  object store is refused: pyarrow's S3 and GCS filesystems cannot move a directory);
- the run epoch goes up by one: the new query's batch ids start at 0 again, and the offline log
  names its files by epoch and batch id.
"""
from __future__ import annotations

import json
import os
from datetime import UTC, datetime

from features.stream_job import StreamPaths
from features.stream_state import StateStore
from streamrec.config import Settings
from streamrec.errors import UserError

CHOICES = ("earliest", "latest")
MOVES_DIRECTORIES = ("local", "hdfs")  # pyarrow filesystems (``type_name``) whose move takes a directory


def _running_pid(paths: StreamPaths) -> int | None:
    """The stream job's pid if its heartbeat names a live process."""
    pid = paths.heartbeat_pid()
    if pid is None:
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def reset_offsets(settings: Settings, to: str, echo=print) -> dict:
    """Start a new checkpoint at the ``to`` offsets of the events topic, keeping the user state."""
    from streams.kafka_source import offsets_to_json, topic_offsets

    if to not in CHOICES:
        raise UserError(f"--reset-offsets takes {' or '.join(CHOICES)}, got {to!r}")
    paths = StreamPaths.of(settings)
    if paths.checkpoint.fs.type_name not in MOVES_DIRECTORIES:
        raise UserError(f"--reset-offsets moves the checkpoint directory, which the {paths.checkpoint.fs.type_name} "
                        f"filesystem of {paths.checkpoint} cannot do: not supported there yet")
    if (pid := _running_pid(paths)) is not None:
        raise UserError(f"the stream job runs (pid {pid}): stop it first ('streamrec infra down')")
    earliest, latest = topic_offsets(settings.kafka, [settings.kafka.events_topic])
    start = offsets_to_json(earliest if to == "earliest" else latest)
    previous = paths.run_info()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = paths.checkpoint.with_name(f"checkpoint-{stamp}")
    fresh = paths.checkpoint.with_name(f".checkpoint-{stamp}.new")

    # The new checkpoint is built beside the old one, then swapped in: a crash leaves one or the other.
    fresh.rmtree()
    fresh.mkdir()
    users = StateStore(paths.state).write_base(StreamPaths(fresh, paths.stats, paths.heartbeat).state) if paths.state.is_dir() else 0
    info = {"epoch": previous["epoch"] + 1, "starting_offsets": start, "reset_at": stamp, "reset_to": to,
            "previous": aside.name if paths.checkpoint.exists() else None}
    StreamPaths(fresh, paths.stats, paths.heartbeat).run_file.write_atomic(json.dumps(info, indent=2).encode())
    if paths.checkpoint.exists():
        paths.checkpoint.rename(aside)
        if paths.stats.exists():  # local (see StreamPaths): copied beside the old checkpoint, wherever it is
            (aside / paths.stats.name).write_atomic(paths.stats.read_bytes())
            paths.stats.unlink()
    fresh.rename(paths.checkpoint)
    echo(f"stream: offsets reset to {to} {json.dumps(start)}; user state of {users} user(s) kept; epoch {info['epoch']}"
         + (f"; old checkpoint and stats in {aside}" if info["previous"] else ""))
    return info
