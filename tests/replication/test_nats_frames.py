"""The NATS target's one-pass batch encoder (bridges/replicator/targets/nats_frames.py) writes
exactly the messages nats_codec.encode describes, plus the atomic batch's headers: every key
form (text, binary, empty, none), null and empty values, plain, repeated and null headers. The
frames are parsed back as a NATS server reads them (HPUB: subject, header and total sizes)."""

from __future__ import annotations

from bridges.replicator.targets import nats_codec as C
from bridges.replicator.targets import nats_frames as F
from edgebus import Record

SUBJECT = "edge.gw.t.0"


def records() -> list[Record]:
    out = []
    for i in range(12):
        key = [None, b"m-1", b"", b"\x00\xff"][i % 4]
        value = None if i % 5 == 0 else b"" if i % 5 == 1 else b"v%d" % i
        headers: list[tuple[str, bytes | None]] = (
            [("unit", b"kWh")] if i % 3 == 0 else [("dup", b"1"), ("dup", None)] if i % 3 == 1
            else [])
        out.append(Record("t", 0, 100 + i, 1_700_000_000_000 + i, key, value, headers))
    return out


def parse(frames: bytes) -> list[tuple[dict[str, str], bytes]]:
    out = []
    pos = 0
    while pos < len(frames):
        eol = frames.index(b"\r\n", pos)
        verb, subject, hlen, total = frames[pos:eol].split(b" ")
        assert (verb, subject) == (b"HPUB", SUBJECT.encode())
        body = frames[eol + 2: eol + 2 + int(total)]
        assert frames[eol + 2 + int(total): eol + 4 + int(total)] == b"\r\n"
        hdr = body[: int(hlen)].decode()
        assert hdr.startswith("NATS/1.0\r\n") and hdr.endswith("\r\n\r\n")
        lines = hdr[len("NATS/1.0\r\n"): -4].split("\r\n")
        out.append((dict(line.split(": ", 1) for line in lines), body[int(hlen):]))
        pos = eol + 4 + int(total)
    return out


def test_the_batch_is_the_codecs_messages_with_the_batch_headers() -> None:
    recs = records()
    items = [(r, 200 + i) for i, r in enumerate(recs)]
    batch = F.encode_batch(SUBJECT, "gw/t/0/", items, "bid", "ab" * 16)
    head, rest = batch.frames(77)
    msgs = [*parse(head + rest), (batch.last_headers, batch.last_payload)]
    assert len(msgs) == len(recs) == batch.count
    for i, (r, (h, payload)) in enumerate(zip(recs, msgs, strict=True), 1):
        want_payload, want = C.encode("gw", "t", 0, r.offset, r.timestamp, r.key, r.value,
                                      r.headers)
        want.update({"Nats-Batch-Id": "bid", "Nats-Batch-Sequence": str(i)})
        if i == 1:
            want[F.EXPECTED] = "77"
        if i == len(recs):
            want.update({C.RESUME: str(200 + i - 1), C.INCARNATION: "ab" * 16,
                         "Nats-Batch-Commit": "1"})
        assert (h, payload) == (want, want_payload), i
        # And it reads back as the record (what a down direction makes of it).
        assert C.decode(h, payload)[1:] == (r.timestamp, r.key, r.value, r.headers)


def test_a_batch_of_one_carries_the_expectation_on_its_commit() -> None:
    (r,) = records()[1:2]
    batch = F.encode_batch(SUBJECT, "gw/t/0/", [(r, 5)], "b1", "cd" * 16)
    assert batch.frames(9) == (b"", b"")
    assert batch.last_headers[F.EXPECTED] == "9"
    assert batch.last_headers["Nats-Batch-Commit"] == "1"
    assert batch.last_headers[C.RESUME] == "5"
