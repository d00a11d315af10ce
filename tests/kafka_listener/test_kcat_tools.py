"""kcat as a user runs it against the listener (docs/KAFKA.md, "Tools tried"): produce with keys,
headers and each compression codec; consume from the beginning, the end, N from the end, a
timestamp (s@) up to a timestamp (e@), in a group (-G); offsets by time and the end (-Q), with
read_committed stopping at an open transaction."""

from __future__ import annotations

import shutil

import pytest
from confluent_kafka import Producer as CKProducer

from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic
from tests.kafka_listener.test_kcat import kcat

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")]


def test_kcat_offsets_codecs_and_groups(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "kt")
    for i, codec in enumerate(("none", "gzip", "snappy", "lz4", "zstd")):
        kcat(kbroker, "-P", "-t", "kt", "-p", "0", "-z", codec, "-K", ":", "-H", f"codec={codec}",
             stdin=f"k{i}:{codec}-a\nk{i}:{codec}-b\n")
    fmt = "%k=%s@%o[%h]\\n"
    rows = kcat(kbroker, "-C", "-t", "kt", "-o", "beginning", "-e", "-f", fmt).splitlines()
    want = [f"k{i}={c}-{x}@{2 * i + j}[codec={c}]"
            for i, c in enumerate(("none", "gzip", "snappy", "lz4", "zstd"))
            for j, x in enumerate("ab")]
    assert rows == want
    assert kcat(kbroker, "-C", "-t", "kt", "-o", "-3", "-e", "-f", fmt).splitlines() == want[-3:]
    assert kcat(kbroker, "-C", "-t", "kt", "-o", "end", "-e", "-f", fmt) == ""
    # The batches' append times, as -C prints them (%T) and -Q / s@ search them.
    times = [int(t) for t in kcat(kbroker, "-C", "-t", "kt", "-o", "beginning", "-e", "-f",
                                  "%T\\n").split()]
    t_lz4 = times[6]
    assert kcat(kbroker, "-Q", "-t", f"kt:0:{t_lz4}").split()[-1] == str(times.index(t_lz4))
    assert kcat(kbroker, "-Q", "-t", "kt:0:-1").split()[-1] == "10"
    assert kcat(kbroker, "-Q", "-t", f"kt:0:{times[-1] + 60_000}").split()[-1] == "-1"
    from_t = kcat(kbroker, "-C", "-t", "kt", "-o", f"s@{t_lz4}", "-e", "-f", fmt).splitlines()
    assert from_t == want[times.index(t_lz4):]
    upto = kcat(kbroker, "-C", "-t", "kt", "-o", "s@0", "-o", f"e@{times[2]}", "-e", "-f",
                fmt).splitlines()
    assert upto == want[:times.index(times[2])]
    grouped = kcat(kbroker, "-G", "ktg", "kt", "-o", "beginning", "-e", "-f", fmt).splitlines()
    assert [r for r in grouped if not r.startswith("%")] == want


def test_kcat_read_committed_stops_at_an_open_transaction(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "ktx")
    plain = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap})
    plain.produce("ktx", b"plain0")
    assert plain.flush(30) == 0
    tx = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap, "transactional.id": "ktx"})
    tx.init_transactions(30)
    tx.begin_transaction()
    tx.produce("ktx", b"open1")
    assert tx.flush(30) == 0
    plain.produce("ktx", b"plain2")
    assert plain.flush(30) == 0

    def read(isolation: str) -> list[str]:
        return kcat(kbroker, "-C", "-t", "ktx", "-o", "beginning", "-e", "-X",
                    f"isolation.level={isolation}", "-f", "%s\\n").split()

    assert read("read_committed") == ["plain0"]
    assert read("read_uncommitted") == ["plain0", "open1", "plain2"]
    assert kcat(kbroker, "-Q", "-t", "ktx:0:-1", "-X",
                "isolation.level=read_committed").split()[-1] == "1"
    tx.commit_transaction(30)
    assert read("read_committed") == ["plain0", "open1", "plain2"]
