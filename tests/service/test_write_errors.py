"""A write(2) that fails on the log with anything but a full disk (EIO from a failing SD card,
EROFS): the partition goes offline at once, with the file and errno named in the producer's
error, the log, `edgebus status` and the metrics; nothing is acknowledged after the failed
write, even when the next write would succeed; a restart's recovery brings it back with exactly
what was acknowledged. ENOSPC stays retriable (the partition stays online).

The failing card is an LD_PRELOAD shim (tests/service/failwrite.c) in the supervisor: write(2)
on files under one partition's directory fails with a chosen errno, once or every time. The
shared-memory producer's batches are written by the supervisor's C data plane
(edgebus/shm/plane.c), whose failed write used to be retried by the Python path: a transient
EIO was acknowledged and the partition stayed online, with nothing logged."""

from __future__ import annotations

import errno
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.errors import DiskFullError, StorageError
from edgebus.testing import EmbeddedBroker, scrape_metrics

pytestmark = pytest.mark.integration

SHIM_SOURCE = Path(__file__).with_name("failwrite.c")


@pytest.fixture(scope="module")
def failwrite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shim, built with the host's gcc."""
    so = tmp_path_factory.mktemp("failwrite") / "failwrite.so"
    r = subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-o", str(so),
                        str(SHIM_SOURCE), "-ldl"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build the write-failing shim: {r.stderr.strip()}")
    return so


def start_card(make_broker: Any, failwrite: Path) -> tuple[EmbeddedBroker, Path]:
    b: EmbeddedBroker = make_broker({"metrics": {"listen": "127.0.0.1:0"}})
    ctl = b.root / "failwrite.ctl"
    b.start(env={"LD_PRELOAD": str(failwrite), "EDGEBUS_FAILWRITE": str(ctl)})
    with Admin(socket=b.socket) as a:
        a.create_topic("card", partitions=1)
    return b, ctl


def read_all(b: EmbeddedBroker, n_at_least: int) -> list[bytes]:
    """Every record of card-0, from offset 0, until at least n came and then none for 1 s."""
    c = Consumer(socket=b.socket, enable_auto_commit=False)
    c.assign([TopicPartition("card", 0)])
    c.seek(TopicPartition("card", 0), 0)
    got: list[Any] = []
    deadline = time.monotonic() + 30
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        recs = [r for rs in c.poll(timeout_ms=200).values() for r in rs]
        if recs:
            got.extend(recs)
            quiet_since = time.monotonic()
        elif len(got) >= n_at_least and time.monotonic() - quiet_since > 1:
            break
    c.close()
    assert [r.offset for r in got] == list(range(len(got)))  # dense from 0
    return [r.value for r in got]


def status_text(b: EmbeddedBroker) -> str:
    return subprocess.run([sys.executable, "-m", "edgebus.cli.main", "status", "--socket",
                           b.socket], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("transport", ["socket", "shm"])
@pytest.mark.parametrize("err", ["EIO", "EROFS"])
def test_a_failed_write_takes_the_partition_offline_even_if_a_retry_would_succeed(
        make_broker: Any, failwrite: Path, transport: str, err: str) -> None:
    b, ctl = start_card(make_broker, failwrite)
    seg = b.data_dir / "card-0" / "00000000000000000000.log"
    acked: list[bytes] = []
    with Producer(socket=b.socket, acks="written", transport=transport, linger_ms=0) as p:
        for i in range(5):
            p.send("card", b"before-%d" % i).get(10)
            acked.append(b"before-%d" % i)
        # One write fails, the next would succeed: a transient error of a failing card.
        ctl.write_text(f"{getattr(errno, err)} 1 {b.data_dir}/card-0/\n")
        with pytest.raises(StorageError) as first:
            p.send("card", b"failed").get(10)
        for i in range(3):  # the card "works" again: still nothing is taken
            with pytest.raises(StorageError) as later:
                p.send("card", b"after-%d" % i).get(10)
    for e in (first.value, later.value):
        assert "card-0 is offline" in str(e) and str(seg) in str(e) and err in str(e), e

    # The log: one ERROR line naming the partition, the file and the errno.
    lines = [ln for ln in b.log().splitlines() if "card-0 is offline" in ln]
    assert len(lines) == 1 and "ERROR" in lines[0] and str(seg) in lines[0] and err in lines[0]
    # status --json, the text status and the metrics.
    with Admin(socket=b.socket) as a:
        part = a.status()["topics"]["card"]["partitions"][0]
    assert part["offline"] is True and part["offline_errno"] == err
    assert str(seg) in part["offline_reason"] and part["log_end_offset"] == 5
    text = status_text(b)
    assert "offline:" in text and "card-0: write error on" in text and err in text
    m = scrape_metrics(b.metrics_port)
    assert m["edgebus_partitions_offline"] == 1
    assert m[f'edgebus_partition_offline{{errno="{err}",partition="0",topic="card"}}'] == 1

    # Recovery at restart (the card replaced: no shim): exactly what was acknowledged, and
    # appends carry on densely.
    b.kill9()
    b.start()
    with Producer(socket=b.socket, acks="durable", transport=transport) as p:
        p.send("card", b"next").get(10)
    assert read_all(b, 6) == [*acked, b"next"]
    with Admin(socket=b.socket) as a:
        assert a.status()["topics"]["card"]["partitions"][0]["offline"] is False


@pytest.mark.parametrize("transport", ["socket", "shm"])
def test_a_full_disk_keeps_the_partition_online(make_broker: Any, failwrite: Path,
                                                transport: str) -> None:
    """ENOSPC is retriable: nothing was wrong with the card. The socket path answers
    DiskFullError; the C data plane's write fails, and Python's path takes the frame again (and
    its write succeeds: the shim fails one write)."""
    b, ctl = start_card(make_broker, failwrite)
    with Producer(socket=b.socket, acks="written", transport=transport, linger_ms=0) as p:
        p.send("card", b"before").get(10)
        ctl.write_text(f"{errno.ENOSPC} 1 {b.data_dir}/card-0/\n")
        try:
            p.send("card", b"maybe").get(10)
            stored = [b"before", b"maybe"]
        except DiskFullError:
            assert transport == "socket"  # only the C plane's failure is taken again
            stored = [b"before"]
        p.send("card", b"after").get(10)
    assert read_all(b, len(stored) + 1) == [*stored, b"after"]
    with Admin(socket=b.socket) as a:
        part = a.status()["topics"]["card"]["partitions"][0]
    assert part["offline"] is False
    assert "is offline" not in b.log()
    b.kill9()
