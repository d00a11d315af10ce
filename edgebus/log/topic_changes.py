"""The changes to the data directory's topics: create, delete, promote a mirror, alter a
topic's settings, add partitions, and the limits on how many there are. Mixed into LogManager
(log/manager.py), whose topic table, partitions and checkpoint they change (loop thread only).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edgebus.errors import (
    EdgebusError,
    InvalidRequestError,
    TopicExistsError,
    TopicLimitError,
    UnknownTopicError,
)
from edgebus.log import data_dir as D
from edgebus.log.fileutil import fsync_dir, storage_error
from edgebus.log.partition import Partition
from edgebus.log.topic_config import TopicConfig, new_incarnation, validate_topic_name


class TopicChanges:
    # LogManager's, set in its __init__.
    data_dir: Path
    _log: logging.Logger
    _topics: dict[str, TopicConfig]
    _parts: dict[str, list[Partition]]
    max_topics: int | None
    max_partitions: int | None

    if TYPE_CHECKING:  # LogManager's
        def _check_open(self) -> None: ...
        def _dir(self, topic: str, partition: int) -> Path: ...
        def write_checkpoint(self, data: bytes | None = None, seq: int | None = None) -> None: ...

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
        cfg = self._existing(name)
        self._save_table({k: v for k, v in self._topics.items() if k != name}, name, "deleting")
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

    def _existing(self, name: str) -> TopicConfig:
        """The topic's settings (the data directory open), UnknownTopicError without it."""
        self._check_open()
        cfg = self._topics.get(name)
        if cfg is None:
            raise UnknownTopicError(f"unknown topic {name!r}")
        return cfg

    def _replace_config(self, name: str, new: TopicConfig, doing: str) -> None:
        """topics.json first (so a restart keeps it), then the table and the partitions, which
        use it from their next append, roll or retention check."""
        self._save_table({**self._topics, name: new}, name, doing)
        for p in self._parts.get(name, []):
            p.config = new

    def _save_table(self, topics: dict[str, TopicConfig], name: str, doing: str) -> None:
        """topics.json, then the table: a failed write changes nothing (StorageError)."""
        try:
            D.save_topics(self.data_dir, topics)
        except OSError as e:
            raise storage_error(e, f"{doing} topic {name}") from e
        self._topics = topics

    def promote(self, name: str) -> TopicConfig:
        """Make a mirror an ordinary, writable topic (after a failover); its offsets go on."""
        cfg = self._existing(name)
        if not cfg.is_mirror:
            raise InvalidRequestError(f"topic {name!r} is not a mirror")
        new = dataclasses.replace(cfg, mirror_of="")
        self._replace_config(name, new, "promoting")
        return new

    def alter_topic_config(self, name: str, config: TopicConfig) -> None:
        """Replace a topic's settings: saved in topics.json first (so a restart keeps them),
        then used by its partitions from their next append, roll or retention check. The
        partition count is fixed at creation."""
        current = self._existing(name)
        if config.partitions != current.partitions:
            raise InvalidRequestError(
                f"topic {name!r} has {current.partitions} partition(s); the partition count "
                f"cannot be changed (asked for {config.partitions})")
        # Invariant: a topic's incarnation never changes, nor its mirror_of but by promote().
        config = dataclasses.replace(config, incarnation=current.incarnation,
                                     mirror_of=current.mirror_of)
        if config != current:
            self._replace_config(name, config, "altering")

    def add_partitions(self, name: str, count: int) -> TopicConfig:
        """Grow a topic to `count` partitions (Kafka's CreatePartitions). The existing partitions
        keep their numbers and data; keys hashed over the partition count may map elsewhere
        from now on, as in Kafka. Directories are made first and topics.json written last, so a
        crash in between leaves directories no topic owns, which the next open removes."""
        current = self._existing(name)
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
