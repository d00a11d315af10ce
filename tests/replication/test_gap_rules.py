"""The destination's rules for gap records and compressed appends, request by request, against a
real supervisor (docs/FORMAT.md 4.9 and 7.9): a gap moves the mirror's log end only from its
log end, is recorded durably, survives kill -9, and a resend is recognised."""

from __future__ import annotations

import pytest

from edgebus import BatchReader, Consumer, ReplicaLink, TopicPartition
from edgebus.errors import CorruptRecordError, OffsetOutOfRangeError, ReplicaDivergedError
from edgebus.log import gaps as G
from edgebus.protocol import messages as M

from .conftest import NODE, TOKEN
from .test_peer_rules import batches, peer, src  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration


def test_a_gap_moves_the_mirrors_end_is_recorded_and_survives_kill9(peer, src):  # noqa: F811
    info, bs = batches(src)
    inc = info.incarnation
    with ReplicaLink(peer.address, NODE, TOKEN) as link:
        link.create_mirror("t", info, f"{NODE}/t")
        assert link.append("t", 0, inc, bs[0].data + bs[1].data) == (2, 0, 2)
        with pytest.raises(OffsetOutOfRangeError, match="unaccounted"):
            link.gap("t", 0, inc, 3, 40, G.GAP_RETENTION)  # not at the log end (2)
        assert link.gap("t", 0, inc, 2, 40, G.GAP_RETENTION, durable=True) == 40
        assert link.gap("t", 0, inc, 2, 40, G.GAP_RETENTION) == 40  # a resend: recognised
        with pytest.raises(ReplicaDivergedError, match="no gap"):
            link.gap("t", 0, inc, 1, 40, G.GAP_RETENTION)  # offset 1 is held: no gap there
        with pytest.raises(ReplicaDivergedError, match="gap record"):
            link.append("t", 0, inc, bs[2].data)  # offset 2 is inside the gap now
    peer.kill9()
    peer.start()
    with BatchReader(peer.socket) as r:
        assert r.describe("t").end_offsets == [40], "the gap outlived kill -9"
        assert [b.data for b in r.read("t", 0, 0)[0]] == [bs[0].data, bs[1].data]
        with pytest.raises(CorruptRecordError, match=r"offsets 2\.\.39 were deleted by the "
                                                     r"source's retention"):
            r.read("t", 0, 2)
    part = next(p for p in (peer.data_dir).iterdir() if p.name == "t-0")
    [gap] = G.load(part)
    assert (gap.start, gap.end, gap.reason) == (2, 40, G.GAP_RETENTION)
    # A consumer reading the mirror is told where the gap is and can step over it.
    with Consumer(socket=peer.socket, auto_offset_reset="earliest") as c:
        c.assign([TopicPartition("t", 0)])
        c.seek(TopicPartition("t", 0), 2)
        with pytest.raises(CorruptRecordError) as e:
            c.poll(timeout_ms=2000)
        assert "seek to 40" in str(e.value)


def test_the_gap_file_refuses_torn_and_damaged_entries(tmp_path):
    good = [G.Gap(0, 10, 1, G.GAP_RETENTION), G.Gap(10, 20, 2, G.GAP_MAX_AGE)]
    G.store(tmp_path, good)
    assert G.load(tmp_path) == good
    raw = bytearray((tmp_path / G.GAPS_FILE).read_bytes())
    raw[3] ^= 1  # damage the first entry's start
    (tmp_path / G.GAPS_FILE).write_bytes(bytes(raw) + b"\x01" * 7)  # and a torn tail
    assert G.load(tmp_path) == good[1:]


def test_a_compressed_append_stores_the_exact_batches(peer, src):  # noqa: F811
    info, bs = batches(src)
    everything = b"".join(b.data for b in bs)
    with ReplicaLink(peer.address, NODE, TOKEN) as link:
        link.create_mirror("t", info, f"{NODE}/t")
        appended, present, end, sent = link.append_compressed("t", 0, info.incarnation, everything)
        assert (appended, present, end) == (5, 0, 5) and sent > 0
        # A frame that does not decompress, or to another size than announced, is refused.
        ch = link._ch
        for body in (M.ReplicaAppendCompressedRequest("t", 0, info.incarnation, 1, M.CODEC_ZSTD,
                                                      len(everything), b"not zstd"),
                     M.ReplicaAppendCompressedRequest("t", 0, info.incarnation, 1, M.CODEC_ZSTD,
                                                      10, _zstd(everything))):
            with pytest.raises(CorruptRecordError):
                ch.request(M.Api.REPLICA_APPEND_COMPRESSED, body)
    with BatchReader(peer.socket) as r:
        assert [b.data for b in r.read("t", 0, 0)[0]] == [b.data for b in bs]


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def test_the_gap_entry_table_matches_format():
    from edgebus import format as F
    from tests.test_format_doc import layout, struct_format

    rows = layout("4.9 Replica gap records")
    assert struct_format(rows) == F.REPLICA_GAP_ENTRY.format
    assert [r["field"] for r in rows] == ["start", "end", "recorded_ms", "reason", "reserved",
                                          "reserved2", "crc"]
    assert F.REPLICA_GAP_ENTRY.size == 32
