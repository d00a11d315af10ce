"""The data directory: its lock, the topic list (topics.json), the recovery checkpoint, and every
partition. Used from the supervisor's loop thread only.

Layout:
    data_dir/.lock                   flock'ed by the running supervisor
    data_dir/topics.json             {"version": 1, "topics": {name: TopicConfig.to_entries()}}
    data_dir/recovery-checkpoint     see edgebus/log/checkpoint.py
    data_dir/<topic>-<partition>/    segments, see edgebus/log/segment.py
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from edgebus.errors import (
    ClosedError,
    EdgebusError,
    StorageError,
    UnknownPartitionError,
    UnknownTopicError,
)
from edgebus.log import data_dir as D
from edgebus.log.checkpoint import CheckpointWriter, encode_checkpoint, read_checkpoint
from edgebus.log.cleanstop import (
    CLEAN,
    KILLED,
    UNKNOWN,
    mark_running,
    mark_stopped,
    previous_stop,
)
from edgebus.log.fileutil import storage_error
from edgebus.log.lock import DataDirLock
from edgebus.log.partition import Partition
from edgebus.log.topic_changes import TopicChanges
from edgebus.log.topic_config import TopicConfig


class LogManager(TopicChanges):
    def __init__(self, data_dir: Path | str, log: logging.Logger | None = None) -> None:
        self.data_dir = Path(data_dir)
        self._log = log or logging.getLogger("edgebus.log")
        self._lock = DataDirLock(self.data_dir)
        self._topics: dict[str, TopicConfig] = {}
        self._parts: dict[str, list[Partition]] = {}
        self._open = False
        self.previous_stop = CLEAN  # how the previous run stopped (cleanstop.py)
        self._checkpoint = CheckpointWriter(self.data_dir)
        # limits.max_topics / limits.max_partitions (the supervisor sets them from its config;
        # None: unbounded, as for tools that open a data directory offline).
        self.max_topics: int | None = None
        self.max_partitions: int | None = None

    # --- open / close -----------------------------------------------------------------------

    def open(self) -> None:
        """Lock the data directory, load the topics, and recover every partition."""
        if self._open:
            raise StorageError(f"log manager for {self.data_dir} is already open")
        D.prepare(self.data_dir)
        self._lock.acquire()
        try:
            self._open_locked()
        except BaseException:
            for p in self.all_partitions():
                p.abandon()
            self._parts = {}
            self._lock.release()
            raise
        self._open = True

    def _open_locked(self) -> None:
        t0 = time.monotonic()
        try:
            self.previous_stop = previous_stop(self.data_dir)
            mark_running(self.data_dir)
            D.clean_leftovers(self.data_dir, self._log)
            self._topics = D.load_topics(self.data_dir)
            D.remove_orphans(self.data_dir, self._topics, self._log)
        except OSError as e:
            raise storage_error(e, f"loading {self.data_dir}") from e
        if self.previous_stop == KILLED:
            self._log.warning("the previous supervisor did not stop cleanly (killed or crashed; "
                              "the machine stayed up, so nothing it had written is lost): "
                              "recovery checks every partition past its checkpoint")
        elif self.previous_stop == UNKNOWN:
            self._log.warning("the data directory has no run marker (written by an edgebus from "
                              "before it, or the marker was deleted): nothing says the previous "
                              "supervisor stopped cleanly, so this start checks it as after a "
                              "power cut: recovery checks every partition past its checkpoint, "
                              "and consumer-group commits past a log end move back to it")
        elif self.previous_stop != CLEAN:
            self._log.warning("the previous supervisor did not stop cleanly and the machine "
                              "went down under it (a power cut or a kernel crash): records "
                              "acknowledged as written but not yet fsynced may be gone; recovery "
                              "checks every partition past its checkpoint")
        points = read_checkpoint(self.data_dir, self._log)
        scanned = 0
        for name, cfg in self._topics.items():
            parts = self._parts[name] = []
            for i in range(cfg.partitions):
                p = Partition.open(self._dir(name, i), name, i, cfg, points.get((name, i)),
                                   self._log)
                parts.append(p)
                rep = p.recovery_report
                if rep is None:
                    continue
                scanned += rep.scanned_bytes
                if (rep.anything_cut or rep.rebuilt_indexes or rep.removed_files
                        or rep.retention_segments):
                    self._log.info("recovered %s: %s; offsets %d..%d (log end %d)", p.name,
                                   rep.summary(), p.log_start_offset, p.log_end_offset - 1,
                                   p.log_end_offset)
        # Rewrite the checkpoint at once: it drops entries of topics that no longer exist, so
        # a stale entry can never be applied to a new topic of the same name (create_topic
        # writes it again before the first append). Not fatal: a full disk must not stop the
        # start that could free space.
        try:
            self.write_checkpoint()
        except EdgebusError as e:
            self._log.warning("cannot rewrite the recovery checkpoint at start: %s", e)
        self._log.info(
            "opened %s: %d topic(s), %d partition(s), scanned %d bytes in %.3f s",
            self.data_dir, len(self._topics), len(self.all_partitions()), scanned,
            time.monotonic() - t0,
        )

    def close(self) -> None:
        """Close every partition (fsync), write the final checkpoint (so the next start scans
        nothing), and release the lock. Raises the first error after doing all of it."""
        if not self._open:
            return
        errors: list[EdgebusError] = []
        for p in self.all_partitions():
            try:
                p.close()
            except EdgebusError as e:
                errors.append(e)
        try:
            self.write_checkpoint()
        except EdgebusError as e:
            errors.append(e)
        if not errors:
            try:
                mark_stopped(self.data_dir)
            except OSError as e:
                errors.append(storage_error(e, "removing the run marker"))
        self._parts = {}
        self._lock.release()
        self._open = False
        if errors:
            raise errors[0]

    def abandon(self) -> None:
        """Drop everything without syncing or checkpointing, as kill -9 would. For crash tests."""
        for p in self.all_partitions():
            p.abandon()
        self._parts = {}
        self._lock.release()
        self._open = False

    # --- topics (made, deleted and changed: log/topic_changes.py) ---------------------------

    def topics(self) -> dict[str, TopicConfig]:
        return dict(self._topics)

    def partition(self, topic: str, partition: int) -> Partition:
        parts = self._parts.get(topic)
        if parts is None:
            raise UnknownTopicError(f"unknown topic {topic!r}")
        if not 0 <= partition < len(parts):
            raise UnknownPartitionError(
                f"topic {topic!r} has partitions 0..{len(parts) - 1}; there is no partition "
                f"{partition}"
            )
        return parts[partition]

    def partitions(self, topic: str) -> list[Partition]:
        parts = self._parts.get(topic)
        if parts is None:
            raise UnknownTopicError(f"unknown topic {topic!r}")
        return list(parts)

    def all_partitions(self) -> list[Partition]:
        return [p for parts in self._parts.values() for p in parts]

    # --- checkpoint and retention -----------------------------------------------------------

    def checkpoint_bytes(self) -> bytes:
        """The checkpoint contents now (cheap, loop thread); write_checkpoint(data) may then run
        on a helper thread."""
        return encode_checkpoint(
            {(p.topic, p.partition): p.recovery_point() for p in self.all_partitions()}
        )

    def snapshot_checkpoint(self) -> tuple[int, bytes]:
        """On the loop thread: a numbered snapshot for write_checkpoint(data, seq) elsewhere."""
        return self._checkpoint.number(), self.checkpoint_bytes()

    def write_checkpoint(self, data: bytes | None = None, seq: int | None = None) -> None:
        """Atomically write the recovery checkpoint (skipped when unchanged: SD cards wear).
        Thread-safe; with seq, skipped when a newer snapshot is already on disk."""
        if data is None:
            seq, data = self.snapshot_checkpoint()
        self._checkpoint.write(data, seq)

    def apply_retention(self, now_ms: int) -> int:
        """Apply every partition's retention; return the number of segments deleted. An error
        in one partition does not stop the others; the first is raised at the end."""
        deleted = 0
        first: EdgebusError | None = None
        for p in self.all_partitions():
            try:
                deleted += p.apply_retention(now_ms)
            except EdgebusError as e:
                self._log.error("retention of %s failed: %s", p.name, e)
                first = first or e
        if first is not None:
            raise first
        return deleted

    # --- files ------------------------------------------------------------------------------

    def _dir(self, topic: str, partition: int) -> Path:
        return self.data_dir / f"{topic}-{partition}"

    def _check_open(self) -> None:
        if not self._open:
            raise ClosedError(f"log manager for {self.data_dir} is not open")
