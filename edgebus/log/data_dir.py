"""The data directory's own files, beside the partitions' (LogManager, manager.py, holds the
lock and calls these from the loop thread): the directory itself, the topic list (topics.json),
what an interrupted delete or atomic write left behind, and partition directories no topic owns.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import time
from pathlib import Path

from edgebus.errors import ConfigError, InvalidRequestError, InvalidTopicError, StorageError
from edgebus.log.fileutil import DIR_MODE, atomic_write, fsync_dir, read_file, storage_error
from edgebus.log.topic_config import TopicConfig, new_incarnation, validate_topic_name

TOPICS_FILE = "topics.json"
TOPICS_VERSION = 1
MAX_TOPICS_FILE_BYTES = 16 * 1024 * 1024  # bounded input, even for a damaged file
DELETED_SUFFIX = ".deleted"
_PARTITION_DIR = re.compile(r"(.+)-([0-9]+)")
# A data directory that cannot be made or entered for these reasons is a wrong setting (exit 78),
# not a failing disk: a home directory others cannot enter, a file in the way, a read-only mount.
_NOT_USABLE_ERRNOS = (errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EROFS, errno.EEXIST)


def prepare(data_dir: Path) -> None:
    """Make the data directory (mode DIR_MODE) if need be: ConfigError when this user cannot."""
    try:
        data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if data_dir.stat().st_mode & 0o777 != DIR_MODE:
            os.chmod(data_dir, DIR_MODE)
    except OSError as e:
        if e.errno in _NOT_USABLE_ERRNOS:  # not the disk failing: the wrong place or user
            raise ConfigError(
                f"data directory {data_dir} cannot be made or used by this user (uid "
                f"{os.geteuid()}): {e}; choose another (--data-dir, $EDGEBUS_DATA_DIR or "
                "data_dir: in the config) or fix its permissions") from e
        raise storage_error(e, f"preparing data directory {data_dir}") from e


def load_topics(data_dir: Path) -> dict[str, TopicConfig]:
    """topics.json, checked; {} for a new data directory (but not for one with partitions)."""
    path = data_dir / TOPICS_FILE
    try:
        raw = read_file(path, MAX_TOPICS_FILE_BYTES)
    except FileNotFoundError:
        found = [d.name for d in partition_dirs(data_dir)]
        if found:
            raise StorageError(
                f"{path} is missing but {data_dir} holds partition directories "
                f"({', '.join(sorted(found)[:5])}); restore {TOPICS_FILE} or remove them"
            ) from None
        return {}
    try:
        doc = json.loads(raw)
        if doc.get("version") != TOPICS_VERSION or not isinstance(doc.get("topics"), dict):
            raise ValueError(f"expected version {TOPICS_VERSION} and a 'topics' object")
        topics: dict[str, TopicConfig] = {}
        for name, entries in doc["topics"].items():
            validate_topic_name(name, internal=True)
            if not isinstance(entries, dict):
                raise ValueError(f"topic {name!r}: entries must be an object")
            topics[name] = TopicConfig.from_entries(entries)
        missing = [n for n, c in topics.items() if not c.incarnation]
        for n in missing:  # topics made before incarnations existed get one now, once
            topics[n] = dataclasses.replace(topics[n], incarnation=new_incarnation())
        if missing:
            save_topics(data_dir, topics)
        return topics
    except (ValueError, AttributeError, InvalidRequestError, InvalidTopicError) as e:
        raise StorageError(f"{path} is damaged: {e}") from None

def save_topics(data_dir: Path, topics: dict[str, TopicConfig]) -> None:
    doc = {"version": TOPICS_VERSION,
           "topics": {k: v.to_entries() for k, v in sorted(topics.items())}}
    atomic_write(data_dir / TOPICS_FILE, (json.dumps(doc, indent=1) + "\n").encode())

def partition_dirs(data_dir: Path) -> list[os.DirEntry[str]]:
    out = []
    with os.scandir(data_dir) as it:
        for e in it:
            if (not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
                    and _PARTITION_DIR.fullmatch(e.name)):
                out.append(e)
    return out

# The data directory's own files written by atomic_write: a crash between the temporary file's
# write and its rename leaves NAME.tmp, harmless but never removed by anything else.
_ATOMIC_LEFTOVERS = frozenset(
    name + ".tmp" for name in (TOPICS_FILE, "recovery-checkpoint", "kafka-leader-epochs"))


def clean_leftovers(data_dir: Path, log: logging.Logger) -> None:
    """Finish interrupted deletes and atomic writes."""
    with os.scandir(data_dir) as it:
        entries = list(it)
    for e in entries:
        if e.name.endswith(DELETED_SUFFIX) and e.is_dir(follow_symlinks=False):
            log.info("removing leftover %s", e.path)
            import shutil  # rarely needed; it pulls in bz2 and lzma

            shutil.rmtree(e.path)
        elif e.name in _ATOMIC_LEFTOVERS:
            os.unlink(e.path)

def remove_orphans(data_dir: Path, topics: dict[str, TopicConfig], log: logging.Logger) -> None:
    """Partition directories no topic owns are what a crash in the middle of a delete
    leaves (topics.json is updated first); remove them so a new topic of the same name
    does not inherit their data."""
    for e in partition_dirs(data_dir):
        m = _PARTITION_DIR.fullmatch(e.name)
        assert m is not None
        cfg = topics.get(m.group(1))
        if cfg is None or int(m.group(2)) >= cfg.partitions:
            log.warning("removing %s: no topic in %s owns it (interrupted delete?)",
                              e.path, TOPICS_FILE)
            remove_dir(data_dir, Path(e.path))

def remove_dir(data_dir: Path, d: Path) -> None:
    # Rename first so that a crash mid-rmtree leaves a *.deleted leftover, never half a
    # partition under a live name.
    tmp = d.with_name(f"{d.name}.{time.time_ns()}{DELETED_SUFFIX}")
    os.rename(d, tmp)
    fsync_dir(data_dir)
    import shutil

    shutil.rmtree(tmp)
