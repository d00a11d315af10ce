"""The data directory: its lock, the topic list (topics.json), the recovery checkpoint, and every
partition. Used from the supervisor's loop thread only.

Layout:
    data_dir/.lock                   flock'ed by the running supervisor
    data_dir/topics.json             {"version": 1, "topics": {name: TopicConfig.to_entries()}}
    data_dir/recovery-checkpoint     see edgebus/log/checkpoint.py
    data_dir/<topic>-<partition>/    segments, see edgebus/log/segment.py
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path

from edgebus.errors import (
    ClosedError,
    EdgebusError,
    InvalidRequestError,
    StorageError,
    TopicExistsError,
    TopicLimitError,
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
from edgebus.log.fileutil import fsync_dir, storage_error
from edgebus.log.lock import DataDirLock
from edgebus.log.partition import Partition
from edgebus.log.topic_config import TopicConfig, new_incarnation, validate_topic_name


class LogManager:
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

    # --- topics -----------------------------------------------------------------------------

    def create_topic(self, name: str, config: TopicConfig, internal: bool = False) -> None:
        self._check_open()
        validate_topic_name(name, internal=internal)
        if name in self._topics:
            raise TopicExistsError(f"topic {name!r} already exists")
        if not isinstance(config, TopicConfig):
            raise InvalidRequestError(f"topic config must be a TopicConfig, not {type(config)}")
        if not internal:
            self.check_room(name, 1, config.partitions)
        if not config.incarnation:  # a mirror brings its source's; every other topic a new one
            config = dataclasses.replace(config, incarnation=new_incarnation())
        topics = {**self._topics, name: config}
        try:
            D.save_topics(self.data_dir, topics)  # a full disk here is DiskFullError too (by errno)
        except OSError as e:
            raise storage_error(e, f"creating topic {name}") from e
        self._topics = topics
        parts: list[Partition] = []
        try:
            for i in range(config.partitions):
                d = self._dir(name, i)
                if d.exists():  # a leftover nobody owns: it must not resurface as this topic
                    D.remove_dir(self.data_dir, d)
                parts.append(Partition.open(d, name, i, config, None, self._log))
            fsync_dir(self.data_dir)
            self._parts[name] = parts
            self.write_checkpoint()  # replaces any stale entry before a byte is appended
        except (OSError, EdgebusError) as e:
            for p in parts:
                p.abandon()
            self._parts.pop(name, None)
            self._topics = {k: v for k, v in topics.items() if k != name}
            try:
                D.save_topics(self.data_dir, self._topics)
                for i in range(config.partitions):
                    if self._dir(name, i).exists():
                        D.remove_dir(self.data_dir, self._dir(name, i))
            except OSError:
                pass  # cleaned at the next open
            if isinstance(e, OSError):
                raise storage_error(e, f"creating topic {name}") from e
            raise

    def check_room(self, name: str, topics: int, partitions: int) -> None:
        """Raise TopicLimitError if `topics` more topics and `partitions` more partitions (for
        topic `name`) would pass limits.max_topics / limits.max_partitions. Every way of creating
        goes through create_topic / add_partitions; validate-only requests call it directly.
        Internal topics ("__consumer_offsets") are the supervisor's own and not counted."""
        mine = {n: c for n, c in self._topics.items() if not n.startswith("__")}
        if self.max_topics is not None and topics and len(mine) + topics > self.max_topics:
            raise TopicLimitError(
                f"topic {name!r} not created: the supervisor holds {len(mine)} topic(s), and "
                f"limits.max_topics is {self.max_topics}")
        held = sum(c.partitions for c in mine.values())
        if self.max_partitions is not None and held + partitions > self.max_partitions:
            raise TopicLimitError(
                f"{partitions} partition(s) of topic {name!r} not created: the supervisor holds "
                f"{held} partition(s), and limits.max_partitions is {self.max_partitions}")

    def delete_topic(self, name: str) -> None:
        """Forget the topic first (topics.json), then remove its directories."""
        self._check_open()
        if name not in self._topics:
            raise UnknownTopicError(f"unknown topic {name!r}")
        cfg = self._topics[name]
        topics = {k: v for k, v in self._topics.items() if k != name}
        try:
            D.save_topics(self.data_dir, topics)
        except OSError as e:
            raise storage_error(e, f"deleting topic {name}") from e
        self._topics = topics
        for p in self._parts.pop(name, []):
            p.abandon()  # its data is going away: nothing to fsync
        try:
            self.write_checkpoint()
        except EdgebusError as e:
            self._log.warning("checkpoint after deleting topic %s: %s", name, e)
        try:
            for i in range(cfg.partitions):
                d = self._dir(name, i)
                if d.exists():
                    D.remove_dir(self.data_dir, d)
        except OSError as e:
            self._log.warning("deleting the files of topic %s: %s (finished at next start)",
                              name, e)

    def promote(self, name: str) -> TopicConfig:
        """Make a mirror an ordinary, writable topic (after a failover); its offsets go on."""
        self._check_open()
        cfg = self._topics.get(name)
        if cfg is None:
            raise UnknownTopicError(f"unknown topic {name!r}")
        if not cfg.is_mirror:
            raise InvalidRequestError(f"topic {name!r} is not a mirror")
        new = dataclasses.replace(cfg, mirror_of="")
        topics = {**self._topics, name: new}
        try:
            D.save_topics(self.data_dir, topics)
        except OSError as e:
            raise storage_error(e, f"promoting topic {name}") from e
        self._topics = topics
        for p in self._parts.get(name, []):
            p.config = new
        return new

    def alter_topic_config(self, name: str, config: TopicConfig) -> None:
        """Replace a topic's settings: saved in topics.json first (so a restart keeps them),
        then used by its partitions from their next append, roll or retention check. The
        partition count is fixed at creation."""
        self._check_open()
        current = self._topics.get(name)
        if current is None:
            raise UnknownTopicError(f"unknown topic {name!r}")
        if config.partitions != current.partitions:
            raise InvalidRequestError(
                f"topic {name!r} has {current.partitions} partition(s); the partition count "
                f"cannot be changed (asked for {config.partitions})")
        # Invariant: a topic's incarnation never changes, nor its mirror_of but by promote().
        config = dataclasses.replace(config, incarnation=current.incarnation,
                                     mirror_of=current.mirror_of)
        if config == current:
            return
        topics = {**self._topics, name: config}
        try:
            D.save_topics(self.data_dir, topics)
        except OSError as e:
            raise storage_error(e, f"altering topic {name}") from e
        self._topics = topics
        for p in self._parts.get(name, []):
            p.config = config

    def add_partitions(self, name: str, count: int) -> TopicConfig:
        """Grow a topic to `count` partitions (Kafka's CreatePartitions). The existing partitions
        keep their numbers and data; keys hashed over the partition count may map elsewhere
        from now on, as in Kafka. Directories are made first and topics.json written last, so a
        crash in between leaves directories no topic owns, which the next open removes."""
        self._check_open()
        current = self._topics.get(name)
        if current is None:
            raise UnknownTopicError(f"unknown topic {name!r}")
        if current.is_mirror:
            raise InvalidRequestError(f"topic {name!r} is a mirror: its partition count is its "
                                      "source's")
        if count <= current.partitions:
            raise InvalidRequestError(
                f"topic {name!r} has {current.partitions} partition(s); a partition count can "
                f"only grow (asked for {count})")
        new = TopicConfig.from_entries({"partitions": count}, base=current)  # range-checked
        self.check_room(name, 0, count - current.partitions)
        parts: list[Partition] = []
        try:
            for i in range(current.partitions, count):
                d = self._dir(name, i)
                if d.exists():  # a leftover nobody owns
                    D.remove_dir(self.data_dir, d)
                parts.append(Partition.open(d, name, i, new, None, self._log))
            fsync_dir(self.data_dir)
            D.save_topics(self.data_dir, {**self._topics, name: new})
        except (OSError, EdgebusError) as e:
            for p in parts:
                p.abandon()
            with contextlib.suppress(OSError):
                for p in parts:
                    D.remove_dir(self.data_dir, p.path)
            if isinstance(e, OSError):
                raise storage_error(e, f"adding partitions to topic {name}") from e
            raise
        self._topics = {**self._topics, name: new}
        self._parts[name].extend(parts)
        for p in self._parts[name]:
            p.config = new
        self.write_checkpoint()
        return new

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
