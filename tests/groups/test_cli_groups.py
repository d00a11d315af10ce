"""`edgebus groups list|describe|reset-offsets`, run as the real command against a real supervisor."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from tests.groups.conftest import ROOT, owners, wait_for

pytestmark = pytest.mark.integration
BACKLOG = {0: 10, 1: 20, 2: 30}


def cli(socket: str, *argv: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "edgebus.cli.main", *argv, "--socket", socket],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert (r.returncode == 0) == ok, (r.returncode, r.stdout, r.stderr)
    return r


def table(text: str, first_header: str) -> list[dict[str, str]]:
    """Rows of the table whose header line starts with first_header, cut at the header's column
    positions (the CLI left-aligns every column under its header)."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(first_header))
    header = lines[start]
    cols = [(m.start(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", header)]
    rows = []
    for ln in lines[start + 1:]:
        if not ln.strip() or ln.startswith("("):
            break
        cuts = [c for c, _ in cols[1:]] + [None]
        rows.append({name: ln[pos:end].strip() for (pos, name), end in zip(cols, cuts, strict=True)})
    return rows


@pytest.fixture
def backlog(broker, admin: Admin) -> None:
    admin.create_topic("lag", partitions=3)
    admin.create_topic("idle", partitions=1)
    with Producer(socket=broker.socket, acks="durable") as p:
        for part, n in BACKLOG.items():
            for i in range(n):
                p.send("lag", b"x%d" % i, partition=part)
        p.flush(30)
    # The group has read 4 records of partition 0 and all of partition 1, none of partition 2.
    c = Consumer(group_id="lagg", socket=broker.socket, enable_auto_commit=False)
    c.assign([TopicPartition("lag", 0)])
    c.commit({TopicPartition("lag", 0): 4, TopicPartition("lag", 1): 20})
    c.close()


def test_describe_shows_lag_against_a_known_backlog(broker, admin: Admin, backlog, members) -> None:
    # A live member (subscribed to another topic) is listed with its assignment.
    m = members("live", "idle", "lagg", session_timeout_ms=1000, heartbeat_interval_ms=100,
                auto_commit=False)  # commits only what it processes: nothing, "idle" is empty
    wait_for(lambda: owners(admin, "lagg"), 10, "the member to join")
    out = cli(broker.socket, "groups", "describe", "lagg").stdout
    assert "State: Stable" in out and "Members: 1" in out
    mrows = table(out, "MEMBER")
    assert [(r["CLIENT"], r["PID"], r["PARTITIONS"]) for r in mrows] == [("live", str(m.pid), "idle-0")]
    rows = {(r["TOPIC"], r["PARTITION"]): r for r in table(out, "TOPIC")}
    got = {k: (r["COMMITTED"], r["LOG END"], r["LAG"]) for k, r in rows.items()}
    assert got == {("idle", "0"): ("-", "0", "-"),
                   ("lag", "0"): ("4", "10", "6"),
                   ("lag", "1"): ("20", "20", "0"),
                   ("lag", "2"): ("-", "30", "-")}
    assert rows[("idle", "0")]["MEMBER"].startswith("live-")
    assert "Total lag: 6" in out
    doc = json.loads(cli(broker.socket, "groups", "describe", "lagg", "--json").stdout)
    lags = {(p["topic"], p["partition"]): (p["committed"], p["log_end_offset"], p["lag"])
            for p in doc["partitions"]}
    assert lags[("lag", 0)] == (4, 10, 6)
    assert lags[("lag", 2)] == (None, 30, None)
    listed = json.loads(cli(broker.socket, "groups", "list", "--json").stdout)
    assert listed == [{"group": "lagg", "state": "Stable", "assignor": "range", "members": 1}]

    # Offsets of an active group cannot be reset.
    r = cli(broker.socket, "groups", "reset-offsets", "lagg", "--topic", "lag", "--to-earliest",
            ok=False)
    assert r.returncode == 1 and "active member" in r.stderr and "stop the group's" in r.stderr
    assert m.finish() == 0
    wait_for(lambda: admin.describe_group("lagg").state == "Empty", 10, "the group to empty")
    text = cli(broker.socket, "groups", "list").stdout
    assert table(text, "GROUP") == [{"GROUP": "lagg", "STATE": "Empty", "MEMBERS": "0",
                                     "ASSIGNOR": "-"}]


def test_reset_offsets(broker, admin: Admin, backlog) -> None:
    def committed() -> dict[int, int]:
        return {tp.partition: o.offset for tp, o in admin.list_group_offsets("lagg").items()
                if tp.topic == "lag"}

    dry = cli(broker.socket, "groups", "reset-offsets", "lagg", "--topic", "lag", "--to-latest",
              "--dry-run").stdout
    assert "dry run" in dry and committed() == {0: 4, 1: 20}
    assert [(r["PARTITION"], r["PREVIOUS"], r["NEW"]) for r in table(dry, "TOPIC")] == \
        [("0", "4", "10"), ("1", "20", "20"), ("2", "-", "30")]
    cli(broker.socket, "groups", "reset-offsets", "lagg", "--topic", "lag", "--to-earliest")
    assert committed() == {0: 0, 1: 0, 2: 0}
    cli(broker.socket, "groups", "reset-offsets", "lagg", "--topic", "lag", "--to-offset", "7",
        "--partition", "2")
    assert committed() == {0: 0, 1: 0, 2: 7}
    cli(broker.socket, "groups", "reset-offsets", "lagg", "--topic", "lag", "--to-offset", "99")
    assert committed() == {0: 10, 1: 20, 2: 30}  # clamped to the log end
    # By time: records appended after `mark` are the only ones left unread.
    time.sleep(0.01)
    mark = time.time()
    time.sleep(0.01)
    with Producer(socket=broker.socket, acks="durable") as p:
        p.send("lag", b"late", partition=1).get(10)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(mark)) + f".{int(mark % 1 * 1e6):06d}"
    cli(broker.socket, "groups", "reset-offsets", "lagg", "--topic", "lag", "--to-datetime", iso)
    assert committed() == {0: 10, 1: 20, 2: 30}
    out = cli(broker.socket, "groups", "describe", "lagg").stdout
    assert {r["PARTITION"]: r["LAG"] for r in table(out, "TOPIC")} == {"0": "0", "1": "1", "2": "0"}
    # A consumer of the group now starts where the reset put it.
    with Consumer("lag", group_id="lagg", socket=broker.socket, session_timeout_ms=1000,
                  heartbeat_interval_ms=100) as c:
        got = wait_for(lambda: c.poll(200), 10, "the late record")
        assert [(r.partition, r.value) for recs in got.values() for r in recs] == [(1, b"late")]


def test_usage_and_unknown_group(broker) -> None:
    r = cli(broker.socket, "groups", "describe", "nobody", ok=False)
    assert "nobody" in r.stderr and "no members and no committed offsets" in r.stderr
    r = cli(broker.socket, "groups", "reset-offsets", "g", "--topic", "t", ok=False)
    assert r.returncode == 2 and "one of the arguments" in r.stderr
    r = cli(broker.socket, "groups", "reset-offsets", "g", "--topic", "t", "--to-datetime", "soon",
            ok=False)
    assert r.returncode == 2 and "ISO 8601" in r.stderr
    r = cli(broker.socket, "groups", "reset-offsets", "g", "--topic", "nope", "--to-latest", ok=False)
    assert r.returncode == 1 and "unknown topic" in r.stderr
