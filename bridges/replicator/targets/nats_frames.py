"""One atomic batch of records as NATS protocol frames, built in one pass (the NATS target's
encoder; the message layout is nats_codec.py's, docs/REPLICATION.md "NATS JetStream").

Every message but the last is one HPUB frame written straight into the batch's bytes: its
header block is a template (id prefix, batch id) filled with the record's offset, timestamp and
extras, with no dict per record. The first message's frame is finished only once the sequence
it expects is known (the previous batch's PubAck), so that a batch is encoded while the one
before it is on its way; the last message (the commit) goes as a request, so it stays payload
and header dict.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from bridges.replicator.targets import nats_codec as C
from edgebus import PartitionRead, Record

EXPECTED = "Nats-Expected-Last-Subject-Sequence"
# nats-server's default max_batch_size: more messages in one atomic batch are refused.
MAX_BATCH_MESSAGES = 1000
# Bytes of one atomic batch (staged by the stream leader, then one replicated proposal).
MAX_BATCH_BYTES = 4 * 1024 * 1024


@dataclass
class Batch:
    subject: bytes
    count: int
    first: tuple[str, bytes] | None  # the first message's header lines and payload (count > 1)
    rest: bytes  # the frames of messages 2 .. count-1
    last_payload: bytes
    last_headers: dict[str, str]

    def frames(self, expected_seq: int) -> tuple[bytes, bytes]:
        """(frames before the commit, the first one expecting `expected_seq` as the subject's
        last stream sequence). For a batch of one, the commit carries the expectation."""
        if self.first is None:
            self.last_headers[EXPECTED] = str(expected_seq)
            return b"", b""
        lines, payload = self.first
        return _hpub(self.subject, f"{lines}{EXPECTED}: {expected_seq}\r\n", payload), self.rest


def _hpub(sub: bytes, lines: str, payload: bytes) -> bytes:
    hdr = f"NATS/1.0\r\n{lines}\r\n".encode()
    return b"HPUB %s %d %d\r\n%s%s\r\n" % (sub, len(hdr), len(hdr) + len(payload), hdr, payload)


def encode_batch(subject: str, id_prefix: str, items: Sequence[tuple[Record, int]],
                 batch_id: str, incarnation: str) -> Batch:
    """items: each record and the offset the link resumes from when it is the subject's last
    message (only the last message carries it). id_prefix: the Nats-Msg-Id up to the offset
    ("<node>/<topic>/<partition>/")."""
    sub = subject.encode()
    mid = f"Nats-Batch-Id: {batch_id}\r\nNats-Batch-Sequence: "
    first: tuple[str, bytes] | None = None
    frames: list[bytes] = []
    n = len(items)
    for i, (r, _) in enumerate(items[:-1], 1):
        lines = (f"{C.MSG_ID}: {id_prefix}{r.offset}\r\n{C.TIMESTAMP}: {r.timestamp}\r\n"
                 f"{C.extra_lines(r.key, r.value, r.headers)}{mid}{i}\r\n")
        if i == 1:
            first = (lines, r.value or b"")
        else:
            frames.append(_hpub(sub, lines, r.value or b""))
    r, resume = items[-1]
    h = {C.MSG_ID: f"{id_prefix}{r.offset}", C.TIMESTAMP: str(r.timestamp)}
    C.extras(h, r.key, r.value, r.headers)
    h.update({"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(n), C.RESUME: str(resume),
              C.INCARNATION: incarnation, "Nats-Batch-Commit": "1"})
    return Batch(sub, n, first, b"".join(frames), r.value or b"", h)


def atomic_groups(topic: str, partition: int, read: PartitionRead, there: int,
                  already: list[int]) -> Iterator[list[tuple[Record, int]]]:
    """The records from offset `there` on, each with the offset the link resumes from when
    it is the subject's last message, in atomic batches of whole source batches where they
    fit. A source batch of more than MAX_BATCH_MESSAGES records is split; the resume point
    then stays at its start, and after a failure the records already there are skipped
    (the batch counted in `already`)."""
    group: list[tuple[Record, int]] = []
    size = 0
    for base, nxt, batch in read.record_batches(topic, partition):
        if nxt <= there:
            already[0] += 1
            continue
        recs = batch if base >= there else [r for r in batch if r.offset >= there]
        if len(recs) < nxt - base:
            already[0] += 1
        nbytes = sum(len(r.value or b"") for r in recs)
        if group and (len(group) + len(recs) > MAX_BATCH_MESSAGES
                      or size + nbytes > MAX_BATCH_BYTES):
            yield group
            group, size = [], 0
        last = len(recs) - 1
        for i, r in enumerate(recs):
            # The cursor when this is the subject's last message: past the source batch
            # if it is the batch's last record, else the batch's start (skipped from here).
            group.append((r, nxt if i == last else base))
            size += len(r.value or b"")
            if len(group) == MAX_BATCH_MESSAGES:
                yield group
                group, size = [], 0
    if group:
        yield group

