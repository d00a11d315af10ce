"""The supervisor's C data plane (edgebus/server/listeners/shm_plane.py, edgebus/shm/plane.c)
against its Python path: two real supervisors, one with the plane (the default) and one with
EDGEBUS_SHM_C_PLANE=0, are sent the same PRODUCE frames over raw shm links, and must give the
same answers, the same log, index and time-index files (append times aside: the wall clock
stamps them) and the same records to a consumer. The sequences (hypothesis) mix acks none,
written and durable, rolls, index entries, batches over max_message_bytes, bad CRCs, several
records per batch, a topic that does not exist and frames pipelined several per wake-up.
Also: a topic deleted while granted, kill -9 right after acknowledgements, hostile frames."""

from __future__ import annotations

import itertools
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgebus import Admin, Consumer, TopicPartition
from edgebus import format as F
from edgebus.batch import build_batch, encode_record, iter_batches
from edgebus.client.channel import connect
from edgebus.client.shm_rings import ShmRings, attach
from edgebus.errors import AuthorizationError
from edgebus.fastpath.produce import produce_body
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol
from edgebus.server.listeners import shm_plane
from edgebus.testing import EmbeddedBroker

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shm_plane.available(),
                                 reason="the C data plane is not built (edgebus.shm._plane) or "
                                        "EDGEBUS_SHM_C_PLANE=0")]

OFF = {"EDGEBUS_SHM_C_PLANE": "0"}
# Small limits, so that short sequences roll segments, write index entries and refuse batches.
CONFIG = {"segment_bytes": 2048, "index_interval_bytes": 300, "max_message_bytes": 1000}
_ACK = struct.Struct("<iqqq")
_corr = itertools.count(1)


class RawLink:
    """A shm link that sends PRODUCE frames as given and collects the answers by correlation id."""

    def __init__(self, sock_path: str, ring_bytes: int = 0) -> None:
        self.sock = connect(sock_path)
        self.rings: ShmRings = attach(self.sock, ring_bytes, ring_bytes)
        self.answers: dict[int, tuple[int, Any]] = {}
        self.frames: list[tuple[int, int, bytes]] = []  # every answer as it came

    def send(self, frames: list[bytes]) -> None:
        for f in frames:
            self.rings.write(f, time.monotonic() + 10)

    def wait(self, corrs: set[int], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not corrs <= self.answers.keys():
            assert time.monotonic() < deadline, f"no answer to {corrs - self.answers.keys()}"
            for r in self.rings.read(deadline):
                body = bytes(r.body)
                self.frames.append((r.correlation_id, r.error_code, body))
                if r.error_code == 0:  # a produce answer: the append time is the clock's
                    n = struct.unpack_from("<H", body)[0]
                    part, base, _atime, start = _ACK.unpack_from(body, 2 + n)
                    self.answers[r.correlation_id] = (0, (body[2:2 + n], part, base, start))
                else:
                    self.answers[r.correlation_id] = (r.error_code, None)

    def close(self) -> None:
        self.rings.close()
        self.sock.close()


def batch(values: list[bytes], bad_crc: bool = False) -> bytes:
    b = bytearray(build_batch([encode_record(1_700_000_000_000, None, v, ()) for v in values],
                              1_700_000_000_000, 1_700_000_000_000))
    if bad_crc:
        b[-1] ^= 0xFF
    return bytes(b)


def produce_frame(corr: int, topic: str, acks: int, b: bytes) -> bytes:
    return produce_body(topic, 0, acks, b).frame(corr)


def normalized_files(data_dir: Path, topic: str) -> dict[str, bytes]:
    """The partition's segment and index files, append times zeroed (the wall clock's)."""
    out = {}
    d = data_dir / f"{topic}-0"
    for f in sorted(d.iterdir()):
        raw = f.read_bytes()
        if f.suffix == ".log":
            b = bytearray(raw)
            pos = 0
            for one in iter_batches(raw):
                b[pos + 8:pos + 16] = bytes(8)
                pos += len(one)
            raw = bytes(b)
        elif f.suffix == ".timeindex":
            e = F.TIME_INDEX_ENTRY
            raw = b"".join(struct.pack("<I", e.unpack_from(raw, i)[1])
                           for i in range(0, len(raw) - len(raw) % e.size, e.size))
        if f.suffix in (".log", ".index", ".timeindex"):
            out[f.name] = raw
    return out


def records(sock: str, topic: str) -> list[tuple[int, bytes | None]]:
    c = Consumer(socket=sock, transport="shm", auto_offset_reset="earliest")
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    end = c.end_offsets([tp])[tp]
    got: list[tuple[int, bytes | None]] = []
    deadline = time.monotonic() + 30
    while c.position(tp) < end and time.monotonic() < deadline:
        for recs in c.poll(500).values():
            got += [(r.offset, r.value) for r in recs]
    c.close()
    return got


def counters(sock: str, topic: str) -> dict[str, Any]:
    """What `edgebus status` says of the topic: its traffic counters and partition."""
    with Admin(socket=sock, transport="socket") as a:
        t = a.status()["topics"][topic]
    return {k: t[k] for k in ("records_in", "bytes_in", "records_out", "bytes_out", "partitions",
                              "size_bytes")}


def plane_frames(sock: str, what: str = "frames") -> int:
    with Admin(socket=sock, transport="socket") as a:
        return int(a.status()["shm_plane"][what])


# One op: (topic: 0 the main one, 1 a second one, 2 one that does not exist; acks; values;
# bad CRC). Ops are sent in chunks (pipelined: several frames per wake-up), each chunk ending
# with an acks=written sentinel whose answer says every earlier immediate answer has come.
_value = st.binary(min_size=0, max_size=400)
_op = st.tuples(st.sampled_from([0, 0, 0, 0, 1, 2]), st.sampled_from([0, 1, 1, 1, 2]),
                st.lists(_value, min_size=1, max_size=3), st.sampled_from([False] * 7 + [True]))
_chunks = st.lists(st.lists(_op, min_size=1, max_size=8), min_size=1, max_size=6)


def run_ops(sock: str, topics: list[str], chunks: list[list[Any]]) -> dict[int, tuple[int, Any]]:
    """Send the chunks on one raw link; the answers by position in the sequence."""
    link = RawLink(sock)
    try:
        by_pos: dict[int, int] = {}
        pos = 0
        for chunk in chunks:
            frames, wait = [], set()
            for t, acks, values, bad in chunk:
                corr = next(_corr)
                by_pos[pos] = corr
                pos += 1
                frames.append(produce_frame(corr, topics[t], acks, batch(values, bad)))
                if acks:
                    wait.add(corr)
            sentinel = next(_corr)
            by_pos[pos] = sentinel
            pos += 1
            frames.append(produce_frame(sentinel, topics[0], 1, batch([b"s"])))
            link.send(frames)
            link.wait(wait | {sentinel})
        return {p: link.answers[c] for p, c in by_pos.items() if c in link.answers}
    finally:
        link.close()


def test_the_plane_gives_what_the_python_path_gives(tmp_path: Path) -> None:
    on = EmbeddedBroker(tmp_path / "on").start()
    off = EmbeddedBroker(tmp_path / "off").start(env=OFF)
    seq = itertools.count()
    try:
        @settings(max_examples=8, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(_chunks)
        def check(chunks: list[list[Any]]) -> None:
            i = next(seq)
            topics = [f"eq{i}", f"eq{i}b", f"eq{i}-missing"]
            for b in (on, off):
                with Admin(socket=b.socket, transport="socket") as a:
                    a.create_topic(topics[0], 1, config=CONFIG)
                    a.create_topic(topics[1], 1, config=CONFIG)
            got_on = run_ops(on.socket, topics, chunks)
            got_off = run_ops(off.socket, topics, chunks)
            assert got_on == got_off
            for t in topics[:2]:
                assert normalized_files(on.data_dir, t) == normalized_files(off.data_dir, t)
                assert records(on.socket, t) == records(off.socket, t)
                assert counters(on.socket, t) == counters(off.socket, t)

        check()
        assert plane_frames(on.socket) > 0, "the plane took no frame: nothing was compared"
        assert plane_frames(off.socket) == 0
    finally:
        on.cleanup()
        off.cleanup()


def test_a_topic_deleted_while_granted_is_refused_then_served_anew(broker) -> None:
    link = RawLink(broker.socket)
    try:
        with Admin(socket=broker.socket, transport="socket") as a:
            a.create_topic("gone", 1)

        def send(value: bytes) -> tuple[int, Any]:
            corr = next(_corr)
            link.send([produce_frame(corr, "gone", 1, batch([value]))])
            link.wait({corr})
            return link.answers[corr]

        assert [send(b"%d" % i)[1][2] for i in range(3)] == [0, 1, 2]
        assert plane_frames(broker.socket) >= 2  # the second and third went through the plane
        with Admin(socket=broker.socket, transport="socket") as a:
            a.delete_topic("gone")
        code, _ = send(b"after delete")
        assert code != 0  # unknown topic: the grant did not outlive its partition
        with Admin(socket=broker.socket, transport="socket") as a:
            a.create_topic("gone", 1)
        assert [send(b"again%d" % i)[1][2] for i in range(3)] == [0, 1, 2]
        assert records(broker.socket, "gone") == [(0, b"again0"), (1, b"again1"), (2, b"again2")]
    finally:
        link.close()


def test_everything_acknowledged_through_the_plane_survives_kill_9(tmp_path: Path) -> None:
    b = EmbeddedBroker(tmp_path / "crash").start()
    try:
        with Admin(socket=b.socket, transport="socket") as a:
            a.create_topic("k9", 1)
        link = RawLink(b.socket)
        corrs = []
        for i in range(200):
            corr = next(_corr)
            corrs.append(corr)
            link.send([produce_frame(corr, "k9", 1, batch([b"r%d" % i]))])
        link.wait(set(corrs))
        assert plane_frames(b.socket) > 150
        acked = {link.answers[c][1][2]: b"r%d" % i for i, c in enumerate(corrs)}
        assert sorted(acked) == list(range(200))
        b.proc.send_signal(signal.SIGKILL)  # right after the last acknowledgement
        b.proc.wait(10)
        link.close()
        b.start()  # recovery
        assert dict(records(b.socket, "k9")) == acked
    finally:
        b.cleanup()


def _head(corr: int, body: bytes) -> bytes:
    return struct.pack("<IHHI", F.REQUEST_MIN_LENGTH + len(body), 4, 0, corr) + body


def hostile_frames(topic: str) -> list[Callable[[int], bytes]]:
    """PRODUCE frames a granted link or socket must refuse (closing it): a topic name running
    past the frame's end, a batch longer than its frame, a frame too short for a header."""
    def topic_past_end(corr: int) -> bytes:
        return _head(corr, struct.pack("<H", 0xFFFF) + topic.encode())

    def batch_past_end(corr: int) -> bytes:
        f = bytearray(produce_frame(corr, topic, 1, batch([b"ok"])))
        at = F.REQUEST_HEADER_SIZE + 2 + len(topic) + 5
        struct.pack_into("<i", f, at, struct.unpack_from("<i", f, at)[0] + 10)
        return bytes(f)

    def short(corr: int) -> bytes:
        return b"\x04\x00\x00\x00abcd"

    return [topic_past_end, batch_past_end, short]


HOSTILE_IDS = ["topic_past_end", "batch_past_end", "short"]


@pytest.mark.parametrize("bad", hostile_frames("hostile"), ids=HOSTILE_IDS)
def test_hostile_frames_on_a_granted_link_close_it_and_nothing_else(broker, bad) -> None:
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic("hostile", 1)
    link = RawLink(broker.socket)
    try:
        for _ in range(3):  # Python's path grants the link, the plane takes the next two
            corr = next(_corr)
            link.send([produce_frame(corr, "hostile", 1, batch([b"ok"]))])
            link.wait({corr})
        assert plane_frames(broker.socket) == 2
        link.send([bad(next(_corr))])
        link.sock.settimeout(10)
        while link.sock.recv(4096):  # an error answer may come first; then the close
            pass
    finally:
        link.close()
    assert records(broker.socket, "hostile") == [(i, b"ok") for i in range(3)]
    with Admin(socket=broker.socket, transport="socket") as a:
        assert "hostile" in a.list_topics()  # the supervisor serves on


def test_an_acl_reload_revokes_a_grant_at_the_next_frame(make_broker: Any) -> None:
    """The grant was made under the old rules; the reload's new generation ends it, so the next
    frame on the same link is decided by the new rules (refused), then allowed again."""
    b = make_broker({"acl": {"file": "acl.yaml"}}).start()
    cfg = Path(b.config_path)
    with Admin(socket=b.socket, transport="socket") as a:
        a.create_topic("acl-plane", 1)
    link = RawLink(b.socket)

    def send(value: bytes) -> tuple[int, Any]:
        corr = next(_corr)
        link.send([produce_frame(corr, "acl-plane", 1, batch([value]))])
        link.wait({corr})
        return link.answers[corr]

    def reload(*args: str, n: int) -> None:
        r = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "acl", *args, "--config",
                            str(cfg)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        with Admin(socket=b.socket, transport="socket") as a:
            deadline = time.monotonic() + 30
            while a.status()["acl"]["reloads"] < n:
                assert time.monotonic() < deadline, "the supervisor did not reload"
                time.sleep(0.05)

    try:
        assert [send(b"%d" % i)[1][2] for i in range(3)] == [0, 1, 2]
        assert plane_frames(b.socket) == 2
        reload("add", "--deny", "user:root", "write", "topic:acl-plane", n=1)
        code, _ = send(b"denied")
        assert code == AuthorizationError.code
        reload("remove", "--deny", "user:root", "write", "topic:acl-plane", n=2)
        assert [send(b"again%d" % i)[1][2] for i in range(3)] == [3, 4, 5]
        assert plane_frames(b.socket) == 4  # granted anew after Python's path took "again0"
    finally:
        link.close()
    assert [v for _, v in records(b.socket, "acl-plane")] == [
        b"0", b"1", b"2", b"again0", b"again1", b"again2"]


def _standing_answers(sock: str, topic: str, sizes: list[int]) -> list[bytes]:
    """A raw consumer link holds a standing fetch on `topic` from offset 0; a raw producer link
    sends one record per size, each after the consumer has read the previous answer (so that
    each append finds it read up, as StandingFetches.push asks); the consumer's answer bodies,
    the batches' append times zeroed."""
    consumer, producer = RawLink(sock), RawLink(sock)
    try:
        corr = next(_corr)
        req = M.FetchRequest(30_000, 1, 1 << 20, [M.FetchPartition(topic, 0, 0, 1 << 20)])
        consumer.send([ClientProtocol.encode_request(M.Api.FETCH_STANDING, corr, req)])
        deadline = time.monotonic() + 10
        while not plane_parked(sock):
            assert time.monotonic() < deadline, "the standing fetch was not parked"
            time.sleep(0.01)
        for i, size in enumerate(sizes):
            pc = next(_corr)
            producer.send([produce_frame(pc, topic, 1, batch([bytes([65 + i % 26]) * size]))])
            producer.wait({pc})
            deadline = time.monotonic() + 10
            while len(consumer.frames) <= i:
                assert time.monotonic() < deadline, f"no answer for record {i}"
                for r in consumer.rings.read(deadline):
                    consumer.frames.append((r.correlation_id, r.error_code, bytes(r.body)))
        out = []
        for c, err, body in consumer.frames:
            assert c == corr and err == 0
            b = bytearray(body)
            at = 4 + 2 + len(topic) + 28  # the batch: after the count, topic, partition's run
            b[at + 8:at + 16] = bytes(8)  # the batch's append time
            out.append(bytes(b))
        return out
    finally:
        consumer.close()
        producer.close()


def plane_parked(sock: str) -> bool:
    with Admin(socket=sock, transport="socket") as a:
        return bool(a.status()["parked_fetches"])


def test_standing_fetch_answers_from_the_plane_equal_the_python_path(tmp_path: Path) -> None:
    """StandingFetches.push's answer, byte for byte, whether the plane writes it (C) or Python
    does; rolls (segment_bytes 2048) send some appends through Python (index entries no longer
    do: the sync-back writes those)."""
    on = EmbeddedBroker(tmp_path / "on").start()
    off = EmbeddedBroker(tmp_path / "off").start(env=OFF)
    sizes = [10, 100, 0, 500, 900, 33, 1, 700, 250, 64] * 2
    try:
        for b in (on, off):
            with Admin(socket=b.socket, transport="socket") as a:
                a.create_topic("st", 1, config=CONFIG)
        got_on = _standing_answers(on.socket, "st", sizes)
        got_off = _standing_answers(off.socket, "st", sizes)
        assert len(got_on) == len(sizes)
        assert got_on == got_off
        # (many appends here roll a segment: those go through Python)
        assert plane_frames(on.socket, "standing_answers") >= 5
        assert plane_frames(off.socket, "standing_answers") == 0
        assert records(on.socket, "st") == records(off.socket, "st")
        assert counters(on.socket, "st") == counters(off.socket, "st")
    finally:
        on.cleanup()
        off.cleanup()


def test_bursts_longer_than_one_call_takes_equal_the_python_path(tmp_path: Path) -> None:
    """Frames pipelined by the hundred: one wake-up reads many, more than the C call appends to
    one partition per call (EB_PLANE_BATCHES), so the sync-back runs between calls on one buffer."""
    on = EmbeddedBroker(tmp_path / "on").start()
    off = EmbeddedBroker(tmp_path / "off").start(env=OFF)
    chunks = [[(0, 1 if i % 7 else 0, [b"burst %d.%d" % (j, i)], False) for i in range(100)]
              for j in range(3)]
    try:
        for b in (on, off):
            with Admin(socket=b.socket, transport="socket") as a:
                a.create_topic("burst", 1)
                a.create_topic("burst-b", 1)
        topics = ["burst", "burst-b", "burst-missing"]
        got_on = run_ops(on.socket, topics, chunks)
        assert got_on == run_ops(off.socket, topics, chunks)
        assert normalized_files(on.data_dir, "burst") == normalized_files(off.data_dir, "burst")
        assert records(on.socket, "burst") == records(off.socket, "burst")
        assert plane_frames(on.socket) > 250
    finally:
        on.cleanup()
        off.cleanup()


def test_a_small_ring_wrapping_round_is_served_whole(broker) -> None:
    """The smallest rings: frames wrap round the end (padding entries), some alone in a wake-up,
    some behind others; every record is stored once, in order, and the supervisor stays
    responsive (a ring holding only padding once kept the plane's read from ever finishing)."""
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic("wrap", 1)
    link = RawLink(broker.socket, F.MIN_RING_BYTES)
    values = [bytes([97 + i % 26]) * (i * 37 % 300) for i in range(400)]
    try:
        for i in range(0, len(values), 4):
            corrs = []
            for v in values[i:i + 4]:
                corrs.append(next(_corr))
                link.send([produce_frame(corrs[-1], "wrap", 1, batch([v]))])
            link.wait(set(corrs))
    finally:
        link.close()
    assert plane_frames(broker.socket) > 300
    assert records(broker.socket, "wrap") == list(enumerate(values))
