"""Store-and-forward policies of a link, end to end with real supervisors, the real relay and the
real `edgebus replicate` process: gap records (retention deleted what was never shipped),
max_age, weights within a priority class, batching by bytes, compression on the wire."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from edgebus import Admin, BatchReader, Producer
from edgebus.errors import CorruptRecordError
from edgebus.log import gaps as G

from .conftest import link_status, read_all, replicator_metrics, wait_for, with_metrics
from .relay import Relay
from .test_conformance import in_step, produce, source_batches

pytestmark = pytest.mark.integration

# The policies are the runner's (bridges/replicator/link.py), the same whatever the transport:
# the plain peer is enough here (the conformance suite runs every target kind).
ONLY_PEER = pytest.mark.parametrize("destination", ["peer"], indirect=True)


@pytest.fixture
def source(make_broker):
    # Retention checked often, so that a test can watch it delete what was never shipped.
    return make_broker({"log": {"retention_check_interval_ms": 100}}, name="src").start()


def ends(sock: str, topic: str) -> tuple[list[int], list[int]]:
    with BatchReader(sock) as r:
        info = r.describe(topic)
        return info.start_offsets, info.end_offsets


def retention_gap(source, topic: str, relays: list[Relay]) -> int:
    """The gap setup the targets share: with `topic` (segment_bytes 2048) mirrored so far, cut the
    link at `relays` (half-open: nothing is closed, nothing arrives), write 200 small records
    (many segments), let retention delete past offset 100 of what was never shipped, then let
    the link back and write 25 more. The source's log start: the gap is [shipped end, it)."""
    for r in relays:
        r.blackhole = True
        r.cut()
    produce(source, topic, 200, linger_ms=0)
    with Admin(socket=source.socket) as a:
        a.alter_topic_config(topic, {"retention_ms": 1})
        wait_for(lambda: ends(source.socket, topic)[0][0] > 100,
                 what="retention to delete what was never shipped")
        a.alter_topic_config(topic, {"retention_ms": 86_400_000})
    start = ends(source.socket, topic)[0][0]
    for r in relays:
        r.blackhole = False  # the link is back
    produce(source, topic, 25, linger_ms=0)
    return start


def gap_records(destination, topic: str, partition: int) -> list[G.Gap]:
    return G.load(destination.broker.data_dir / f"{topic}-{partition}")


@ONLY_PEER
def test_retention_past_a_cut_link_leaves_a_gap_record_and_the_rest_is_exact(
        source, destination, make_replicator):
    with Admin(socket=source.socket) as a:
        a.create_topic("tiny", 1, {"segment_bytes": 2048})
    produce(source, "tiny", 40, linger_ms=0)
    relay = Relay(("127.0.0.1", destination.port))
    rep = make_replicator(["tiny"], address=relay.address, heartbeat_s=0.3)
    port = with_metrics(rep)
    rep.start()
    wait_for(lambda: in_step(source, destination, "tiny", 1), what="the mirror")
    mirror_end = ends(destination.broker.socket, "tiny")[1][0]
    assert mirror_end == 40
    start = retention_gap(source, "tiny", [relay])
    want_end = ends(source.socket, "tiny")[1][0]
    wait_for(lambda: ends(destination.broker.socket, "tiny")[1][0] == want_end, timeout=60,
             what=f"the mirror past the gap:\n{rep.log()[-2000:]}")
    # The gap is recorded at the target with exactly the range that was never shipped...
    [gap] = gap_records(destination, "tiny", 0)
    assert (gap.start, gap.end, gap.reason) == (40, start, G.GAP_RETENTION)
    with BatchReader(destination.broker.socket) as r:
        with pytest.raises(CorruptRecordError, match=f"offsets 40..{start - 1} were deleted"):
            r.read("tiny", 0, 40)
        # ...and everything before and after it is the source's, batch for batch.
        assert read_all(r, "tiny", 0, start) == source_batches(source, "tiny", 0)
        assert sum(b.next_offset - b.base_offset for b in r.read("tiny", 0, 0, 1 << 20)[0]) == 40
    # The metric and the status line say so.
    want = f'edgebus_replicator_gap_records_total{{link="l1",partition="0",topic="tiny"}} ' \
           f'{float(start - 40)}'
    assert want in replicator_metrics(port)
    [p] = link_status(port)["partitions"]
    assert p["gap_records"] == start - 40 and "deleted by the source's retention" in p["last_gap"]
    out = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "replicate", "--config",
                          str(rep.config_path), "--status"], capture_output=True, text=True,
                         timeout=60)
    assert f"GAP: {start - 40} records deleted by retention" in out.stdout, out.stdout
    assert f"offsets 40..{start - 1}" in out.stdout
    assert "gap recorded" in rep.log()
    # And the destination's own `edgebus status` shows the mirror's gap record.
    dst = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "status", "--socket",
                          destination.broker.socket], capture_output=True, text=True, timeout=60)
    assert f"GAP: {start - 40} offsets never shipped (1 record(s); last 40..{start - 1}, " \
        "retention)" in dst.stdout, dst.stdout
    relay.close()


@ONLY_PEER
def test_max_age_records_are_not_shipped_and_are_counted(source, destination, make_replicator):
    with Admin(socket=source.socket) as a:
        a.create_topic("stale", 1)
        a.create_topic("fresh", 1)
    produce(source, "stale", 30, linger_ms=0)
    produce(source, "fresh", 30, linger_ms=0)
    time.sleep(2.5)  # these are now older than max_age
    rep = make_replicator([{"pattern": "stale", "max_age": "2s"}, "fresh"])
    port = with_metrics(rep)
    rep.start()
    wait_for(lambda: ends(destination.broker.socket, "stale")[1][0] == 30, what="the gap")
    produce(source, "stale", 20, linger_ms=0)  # young: these ship
    wait_for(lambda: ends(destination.broker.socket, "stale")[1][0] == 50, what="young records")
    [gap] = gap_records(destination, "stale", 0)
    assert (gap.start, gap.end, gap.reason) == (0, 30, G.GAP_MAX_AGE), "one gap, not one per read"
    with BatchReader(destination.broker.socket) as r:
        assert read_all(r, "stale", 0, 30) == read_all_source(source, "stale", 30)
    # A topic without max_age ships everything, however old.
    wait_for(lambda: in_step(source, destination, "fresh", 1), what="the other topic")
    assert not gap_records(destination, "fresh", 0)
    text = replicator_metrics(port)
    assert 'edgebus_replicator_expired_records_total{link="l1",partition="0",topic="stale"} 30.0' \
        in text
    assert 'edgebus_replicator_expired_records_total{link="l1",partition="0",topic="fresh"} 0.0' \
        in text
    by_topic = {p["topic"]: p for p in link_status(port)["partitions"]}
    assert by_topic["stale"]["expired_records"] == 30 and by_topic["fresh"]["expired_records"] == 0


def read_all_source(source, topic: str, start: int) -> list[bytes]:
    with BatchReader(source.socket) as r:
        return read_all(r, topic, 0, start)


@ONLY_PEER
def test_compression_and_batch_bytes_keep_the_exact_bytes(source, destination, make_replicator):
    """zstd on the wire: the mirror holds the source's exact batches, and fewer bytes crossed
    the link than were shipped; batch_bytes bounds each append (more, smaller appends)."""
    with Admin(socket=source.socket) as a:
        a.create_topic("logs", 1)
    with Producer(socket=source.socket, batch_size=16 * 1024, linger_ms=5) as p:
        for i in range(4000):
            p.send("logs", f"level=info unit=pump-{i % 5} msg=pressure nominal {i}".encode())
        p.flush()
    rep = make_replicator(["logs"], compression="zstd", batch_bytes="32KiB")
    port = with_metrics(rep)
    rep.start()
    wait_for(lambda: in_step(source, destination, "logs", 1), what="the mirror")
    size = sum(len(b) for b in source_batches(source, "logs", 0))
    # The link counts an append when the peer's answer reaches it, which can be after the peer
    # has the records (in_step above): a loaded machine showed the last append uncounted
    # (261,854 of 280,042 bytes) in a status read right after. Waited for, then checked exact.
    last: list[dict] = []

    def counted() -> bool:
        last[:] = link_status(port)["partitions"]
        return bool(last[0]["shipped_bytes"] >= size)

    try:
        wait_for(counted, what="the link to count every append")
    except AssertionError as e:
        raise AssertionError(f"{e}: {last}\n{rep.log()[-3000:]}") from None
    [p] = last
    assert p["shipped_bytes"] == size, (p, rep.log()[-3000:])
    assert p["appends"] >= size // (32 * 1024 + 16 * 1024), "batch_bytes bounds an append"
    wire = [ln for ln in replicator_metrics(port).splitlines()
            if ln.startswith('edgebus_replicator_wire_bytes_total{link="l1"}')]
    sent = float(wire[0].split()[-1])
    assert 0 < sent < size / 3, (sent, size)  # text compresses well


@ONLY_PEER
def test_weights_share_a_priority_class(source, destination, make_replicator):
    """Two topics of one class, each with a backlog, on a capped link (so that the backlog takes
    many reads): with weights 3 and 1 the heavy one ships three bytes for every one of the light
    one, so while both have a backlog the light one has shipped about a third of the heavy
    one's bytes. (Equal weights would have it at about the same; strict priority at 0.)

    Both figures come from one status snapshot of the replicator (shipped_bytes per partition),
    not from the mirrors' ends read at some moment after the heavy backlog was done: a test
    process starved for half a second (a loaded machine) read the light one late, after it
    had the whole link to itself, and saw 0.6 instead of 0.33."""
    with Admin(socket=source.socket) as a:
        a.create_topic("heavy", 1)
        a.create_topic("light", 1)
    for topic in ("heavy", "light"):
        with Producer(socket=source.socket, batch_size=32 * 1024) as p:
            for _ in range(2):
                p.send_batch(topic, [b"w" * 1000] * 1000, partition=0)  # ~2 MB
            p.flush()
    size = {t: sum(map(len, source_batches(source, t, 0))) for t in ("heavy", "light")}
    rep = make_replicator([{"pattern": "heavy", "weight": 3},
                           {"pattern": "light", "weight": 1}], max_bytes_per_s=1024 * 1024)
    port = with_metrics(rep)
    rep.start()
    samples: list[tuple[int, int]] = []  # (heavy, light) shipped bytes, both still behind

    def heavy_done() -> bool:
        shipped = {p["topic"]: p["shipped_bytes"] for p in link_status(port)["partitions"]}
        if shipped.get("heavy", 0) >= size["heavy"]:
            return True
        # A quarter of the heavy backlog: enough reads that one batch more or less either way
        # does not move the ratio much.
        if shipped["heavy"] >= size["heavy"] // 4 and shipped["light"] < size["light"]:
            samples.append((shipped["heavy"], shipped["light"]))
        return False

    wait_for(heavy_done, timeout=60, what="the heavy backlog to drain")
    assert samples, "no status snapshot while both topics had a backlog"
    heavy, light = samples[-1]
    assert 0.15 < light / heavy < 0.55, (samples, size)
    wait_for(lambda: in_step(source, destination, "light", 1), what="the light topic after")


def test_the_policy_settings_are_checked(tmp_path):
    from bridges.replicator.config import config_from_mapping
    from edgebus.errors import ConfigError

    from .conftest import TOKEN, secret

    tf = secret(tmp_path / "tok", TOKEN)
    link = {"name": "b", "target": "peer", "address": "127.0.0.1:9", "token_file": str(tf),
            "topics": [{"pattern": "a*", "priority": 3, "weight": 5, "max_age": "2h"}],
            "batch_bytes": "256KiB", "linger_ms": "50ms", "compression": "zstd"}
    cfg = config_from_mapping({"node": "gw", "links": [link]}).links[0]
    assert (cfg.batch_bytes, cfg.linger_ms, cfg.compression) == (256 * 1024, 50, "zstd")
    rule = cfg.rule_for("ab")
    assert rule is not None and (rule.priority, rule.weight, rule.max_age_ms) == (3, 5, 7_200_000)
    bad = [({"topics": [{"pattern": "a", "weight": 0}]}, r"topics\[0\]\.weight"),
           ({"topics": [{"pattern": "a", "weight": True}]}, r"topics\[0\]\.weight"),
           ({"topics": [{"pattern": "a", "max_age": "soon"}]}, r"topics\[0\]\.max_age"),
           ({"topics": [{"pattern": "a", "max_age": 0}]}, r"topics\[0\]\.max_age"),
           ({"topics": [{"pattern": "a", "maxage": "1h"}]}, r"topics\[0\]"),
           ({"batch_bytes": 100}, "batch_bytes: expected 4096"),
           ({"linger_ms": "2h"}, "linger_ms: expected 0..60000"),
           ({"compression": "lz5"}, "compression: expected one of none, zstd")]
    for change, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            config_from_mapping({"node": "gw", "links": [{**link, **change}]})


@ONLY_PEER
def test_linger_gathers_a_trickle_into_one_append(source, destination, make_replicator):
    """An idle link woken by new data waits linger_ms before it reads: 30 one-record batches
    sent one after another (well within the linger) ship in a few appends; without linger
    each goes on its own as it comes."""
    with Admin(socket=source.socket) as a:
        a.create_topic("trickle", 1)
    produce(source, "trickle", 1, linger_ms=0)
    rep = make_replicator(["trickle"], linger_ms=5000)
    port = with_metrics(rep)
    rep.start()
    wait_for(lambda: in_step(source, destination, "trickle", 1), what="the mirror")
    wait_for(lambda: link_status(port)["state"] == "up", what="the link up")
    [before] = link_status(port)["partitions"]
    with Producer(socket=source.socket, linger_ms=0) as p:  # 30 batches of one record, a
        for i in range(30):                                   # trickle of about 0.6 s
            p.send("trickle", f"t{i}".encode()).get(10)
            time.sleep(0.02)
    assert len(source_batches(source, "trickle", 0)) == 31
    wait_for(lambda: in_step(source, destination, "trickle", 1), what="the trickle")
    [after] = link_status(port)["partitions"]
    # Without linger: 30 (each as it comes). With it: one or two, a few on a starved machine.
    assert after["appends"] - before["appends"] <= 5, (before, after)


@ONLY_PEER
def test_the_status_shows_each_partitions_rate(source, destination, make_replicator):
    """While a backlog ships on a capped link, /status and `--status` show its rate, which the
    cap bounds (the token bucket lets one second's worth go at once, so over a window of at
    least a second the rate is at most twice the cap); once the backlog is done the rate falls
    back to 0."""
    cap = 512 * 1024
    with Admin(socket=source.socket) as a:
        a.create_topic("paced", 1)
    with Producer(socket=source.socket, batch_size=64 * 1024) as p:
        p.send_batch("paced", [b"p" * 1000] * 2500, partition=0)  # ~2.5 MB: about 5 s
        p.flush()
    rep = make_replicator(["paced"], max_bytes_per_s=cap)
    port = with_metrics(rep)
    rep.start()

    seen: list[tuple[float, int]] = []

    def rate() -> tuple[float, int]:
        [p] = link_status(port)["partitions"]
        seen[:] = [(p["rate_records_s"], p["rate_bytes_s"])]
        return seen[0]

    wait_for(lambda: rate()[1] > 0, what="a rate while the backlog ships")
    # The snapshot the wait saw, not a second read: a test process starved for the ~5 s the
    # backlog takes would read the rate of a link with nothing left to ship.
    [(records_s, bytes_s)] = seen
    assert 0 < bytes_s <= 2 * cap and records_s > 0, (records_s, bytes_s)
    out = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "replicate", "--config",
                          str(rep.config_path), "--status"], capture_output=True, text=True,
                         timeout=60)
    assert "records/s" in out.stdout or in_step(source, destination, "paced", 1), out.stdout
    wait_for(lambda: in_step(source, destination, "paced", 1), timeout=60, what="the backlog")
    wait_for(lambda: rate() == (0.0, 0), timeout=60, what="the rate to fall back to 0")
