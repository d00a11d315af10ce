"""Transactions (Kafka's, for both front ends): the coordinator's state and its file (docs/FORMAT.md 9.4).

One `Txn` per transactional id: its producer id and epoch, the transaction's state, the
partitions it wrote (with the offset of its first batch in each: what holds the partition's last
stable offset back) and the consumer offsets it will commit. Per partition, the aborted
transactions (producer id, first offset, marker offset) that read_committed fetches list so
clients drop their records.

The state is kept in `data_dir/transactions.json`, rewritten whole (temporary file, fsync,
rename, fsync of the directory) before any change it records takes effect: before a transaction's
first batch is appended to a partition, before its markers are written, after they are. A
supervisor SIGKILLed at any point restarts with a state that is either before or after each
step; a transaction found between "prepare" and "complete" has its markers written again (a
second marker for a transaction that is no longer open is harmless: clients and the fetch path
ignore it). A data directory of an older edgebus has `kafka-transactions.json` instead: it is read
when the new name is missing, and removed once the state is durably written under the new name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgebus.log.fileutil import fsync_dir

FILE = "transactions.json"
# The name before native producers shared the file: read when FILE is missing (an upgrade in
# place), removed after the first durable save under FILE.
OLD_FILE = "kafka-transactions.json"
VERSION = 1

EMPTY, ONGOING, PREPARE_COMMIT, PREPARE_ABORT = "empty", "ongoing", "prepare_commit", "prepare_abort"

PartKey = tuple[str, int]


@dataclass
class Txn:
    producer_id: int
    epoch: int
    timeout_ms: int
    state: str = EMPTY
    # (topic, partition) -> offset of the transaction's first batch there (-1: added, none yet)
    parts: dict[PartKey, int] = field(default_factory=dict)
    # group id -> [(topic, partition, offset, metadata[, leader epoch])] committed with the
    # transaction (the epoch only when above 0: kafka/txn.py)
    offsets: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    # monotonic time the transaction began (restarted on load: the timeout counts from then)
    began: float = 0.0
    # how the last transaction ended while none is open: "commit", "abort" or "" (none since the
    # producer's InitProducerId); Kafka's CompleteCommit / CompleteAbort states
    ended: str = ""


@dataclass
class TxnState:
    path: Path
    txns: dict[str, Txn] = field(default_factory=dict)
    # the old-named file the state was read from, removed by the next save (None: no such file)
    legacy: Path | None = None
    # (topic, partition) -> [(producer id, first offset, marker offset)], oldest first
    aborted: dict[PartKey, list[tuple[int, int, int]]] = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir: Path, now: float) -> TxnState:
        path = Path(data_dir) / FILE
        st = cls(path)
        old = path.with_name(OLD_FILE)
        try:
            doc = json.loads(path.read_text())
            if old.exists():  # killed between the upgrade's save and its removal: stale now
                st.legacy = old
        except FileNotFoundError:
            try:
                doc = json.loads(old.read_text())
            except FileNotFoundError:
                return st
            st.legacy = old
        for tid, t in doc.get("txns", {}).items():
            st.txns[tid] = Txn(
                t["producer_id"], t["epoch"], t["timeout_ms"], t["state"],
                {(p[0], p[1]): p[2] for p in t["parts"]},
                {g: [tuple(e) for e in es] for g, es in t["offsets"].items()},
                now, t.get("ended", ""))
        for p in doc.get("aborted", []):
            st.aborted[(p[0], p[1])] = [tuple(a) for a in p[2]]
        return st

    def save(self) -> None:
        """Write the whole state atomically and durably."""
        doc: dict[str, Any] = {"version": VERSION, "txns": {
            tid: {"producer_id": t.producer_id, "epoch": t.epoch, "timeout_ms": t.timeout_ms,
                  "state": t.state, "parts": [[k[0], k[1], off] for k, off in t.parts.items()],
                  "offsets": {g: [list(e) for e in es] for g, es in t.offsets.items()},
                  "ended": t.ended}
            for tid, t in self.txns.items()},
            "aborted": [[k[0], k[1], [list(a) for a in v]] for k, v in self.aborted.items() if v]}
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        if self.legacy is not None:  # only now: the state is durable under its new name
            self.legacy.unlink(missing_ok=True)
            fsync_dir(self.path.parent)
            self.legacy = None

    def forget_topic(self, topic: str) -> bool:
        """A topic was deleted: what the state holds of its partitions goes (whether anything
        did). Its aborted transactions would otherwise hide the records of a re-created topic's
        committed ones (a producer keeps its id across transactions), and an open transaction's
        first offset there would set the new partition's last stable offset. An open
        transaction keeps the partition as added, without a first offset: its next batch to a
        re-created topic records one anew."""
        changed = False
        for key in [k for k in self.aborted if k[0] == topic]:
            del self.aborted[key]
            changed = True
        for t in self.txns.values():
            for key in [k for k in t.parts if k[0] == topic]:
                changed = changed or t.parts[key] >= 0
                t.parts[key] = -1
            for group, entries in t.offsets.items():  # its consumer offsets are gone too
                kept = [e for e in entries if e[0] != topic]
                changed = changed or len(kept) != len(entries)
                t.offsets[group] = kept
        return changed

    def open_first_offsets(self, key: PartKey) -> list[tuple[int, int]]:
        """(producer id, first offset) of every transaction with batches in `key` not yet
        ended by a marker."""
        return [(t.producer_id, t.parts[key]) for t in self.txns.values()
                if t.state != EMPTY and t.parts.get(key, -1) >= 0]

    def last_stable_offset(self, key: PartKey, high_watermark: int) -> int:
        firsts = [off for _pid, off in self.open_first_offsets(key)]
        return min(firsts) if firsts else high_watermark

    def aborted_between(self, key: PartKey, start: int, end: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of the aborted transactions that have records in
        [start, end): those whose marker comes at or after `start` and which began before `end`."""
        return [(pid, first) for pid, first, marker in self.aborted.get(key, ())
                if marker >= start and first < end]

    def prune(self, key: PartKey, log_start: int) -> None:
        """Forget aborted transactions wholly below the partition's log start."""
        lst = self.aborted.get(key)
        if lst:
            self.aborted[key] = [a for a in lst if a[2] >= log_start]
