"""A group rebalance that revokes a partition from a consumer holding a standing fetch on the
Unix socket (FETCH_STANDING, docs/FORMAT.md 7.13): real member processes, real supervisor."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebus import Admin, TopicPartition
from tests.groups.conftest import owners, start_producer, wait_for

pytestmark = pytest.mark.integration


def _log_lines(path: Path) -> list[list[str]]:
    return [ln.split() for ln in path.read_text().split("\n")[:-1]]


def test_a_rebalance_that_revokes_a_partition(broker, admin: Admin, members, monkeypatch):
    """Two member processes on the socket: the first holds both partitions with a standing
    fetch while records flow; when the second joins, the first must deliver no record of the
    partition it lost after its new assignment, and every record is processed."""
    monkeypatch.setenv("EDGEBUS_TRANSPORT", "socket")  # the member processes inherit it
    admin.create_topic("ssr", partitions=2)
    opts = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 200,
            "auto_commit_interval_ms": 300}
    first = members("r0", "ssr", "ssr-group", **opts)
    wait_for(lambda: (o := owners(admin, "ssr-group")) and len(o) == 1, 15, "the first member")
    prod = start_producer(broker, "ssr", "p", 3000, 1000)
    try:
        wait_for(lambda: len(first.events().processed) > 300, 30, "records to flow")
        second = members("r1", "ssr", "ssr-group", **opts)
        wait_for(lambda: (o := owners(admin, "ssr-group")) and len(o) == 2, 20,
                 "the second member to be assigned")
        assert prod.wait(60) == 0
    finally:
        if prod.poll() is None:
            prod.kill()
    ends = {tp.partition: off for tp, (off, _) in admin.list_offsets(
        [TopicPartition("ssr", p) for p in range(2)], -1).items()}
    assert sum(ends.values()) == 3000

    def covered() -> bool:
        done = {e for m in (first, second) for e in m.events().processed}
        return all((p, o) in done for p in range(2) for o in range(ends[p]))

    wait_for(covered, 30, "every record to be processed", step=0.2)
    assert first.finish() == 0 and second.finish() == 0
    lines = _log_lines(first.out)
    assigned = [i for i, f in enumerate(lines) if f[0] == "A"]
    assert len(assigned) >= 2, "the first member was never reassigned"
    last = assigned[-1]
    kept = {int(item.rsplit(":", 2)[1]) for item in lines[last][3:]}
    assert len(kept) == 1, lines[last]
    late = [f for f in lines[last:] if f[0] == "P" and int(f[1]) not in kept]
    assert not late, f"records of a revoked partition after the new assignment: {late[:5]}"
