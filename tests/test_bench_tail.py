"""bench/run.py: the forked producer and consumer of a case freeze the heap they inherit from the
harness (issue 16: its full collections were 20-57 ms pauses inside a latency case), for every
system alike; CHILD_GC_FREEZE=False is the old behaviour. bench/process_knobs.py: variant specs and the
supervisor's nice value on each of its threads. Real forked processes; nothing here asserts a
speed."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from bench import peers, process_knobs
from bench import run as R


class _Reporting(peers.UnixSocket):
    """The bare socket, whose producer and consumer write, as they start, how many objects their
    process has frozen."""

    @staticmethod
    def producer(ctx: peers.Ctx, i: int) -> Any:
        Path(ctx.data["dir"], "producer.frozen").write_text(str(gc.get_freeze_count()))
        return peers.UnixSocket.producer(ctx, i)

    @staticmethod
    def consumer(ctx: peers.Ctx, i: int) -> Any:
        Path(ctx.data["dir"], "consumer.frozen").write_text(str(gc.get_freeze_count()))
        return peers.UnixSocket.consumer(ctx, i)

    def teardown(self, ctx: peers.Ctx) -> None:
        self.frozen = {side: int(Path(ctx.data["dir"], f"{side}.frozen").read_text())
                       for side in ("producer", "consumer")}
        super().teardown(ctx)


def _case(freeze: bool) -> dict[str, int]:
    adapter = _Reporting()
    R.RATE, R.CHILD_GC_FREEZE = 1000, freeze
    try:
        row = R.run_case(adapter, "unix-socket", "send", 100, 1, 1, True, 0.1, None)
    finally:
        R.RATE, R.CHILD_GC_FREEZE = 10_000, True
    assert "errors" not in row and row["received"] == row["sent"] == 100
    return adapter.frozen


@pytest.mark.integration
def test_the_forked_children_freeze_what_they_inherit() -> None:
    parent = gc.get_freeze_count()  # 0, unless a test in this process ran a supervisor in it
    frozen = _case(True)
    # Everything the harness (this pytest process) had: far more than a bare interpreter's.
    assert frozen["producer"] > parent + 10_000 and frozen["consumer"] > parent + 10_000
    assert _case(False) == {"producer": parent, "consumer": parent}
    assert gc.get_freeze_count() == parent, "only the children froze their heap"


@pytest.mark.unit
def test_variant_specs() -> None:
    before, after, nice = process_knobs.parse_variants("before:freeze=0;after:;n5:nice=-5+EDGEBUS_GC_FREEZE=0")
    assert (before.name, before.freeze, before.nice, before.env) == ("before", False, None, {})
    assert (after.name, after.freeze, after.nice, after.env) == ("after", True, None, {})
    assert (nice.nice, nice.env) == (-5, {"EDGEBUS_GC_FREEZE": "0"})
    assert before.env_key() == after.env_key() != nice.env_key()
    assert [v.name for v in process_knobs.parse_variants("")] == ["default"]
    with pytest.raises(ValueError, match="'nice' is not KEY=VALUE"):
        process_knobs.parse_variants("x:nice")


@pytest.mark.unit
def test_renice_sets_every_thread_of_the_process() -> None:
    """A thread started before the renice gets the new value too (setpriority on the pid alone
    would change only the main thread: Linux keeps nice per thread)."""
    if os.geteuid() != 0:
        pytest.skip("raising the nice value back needs root (CAP_SYS_NICE)")
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        got = process_knobs.renice(os.getpid(), 3)
        assert len(got) >= 2 and set(got) == {3}
        assert os.getpriority(os.PRIO_PROCESS, t.native_id or 0) == 3
    finally:
        stop.set()
        t.join()
        process_knobs.renice(os.getpid(), 0)
    assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == 0


@pytest.mark.unit
def test_set_policy_sets_every_thread_and_policy_variants_are_checked() -> None:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        # SCHED_BATCH, not a realtime policy: a test must not take cores from the others.
        assert set(process_knobs.set_policy(os.getpid(), "batch")) == {os.SCHED_BATCH}
        assert os.sched_getscheduler(t.native_id or 0) == os.SCHED_BATCH
    finally:
        stop.set()
        t.join()
        process_knobs.set_policy(os.getpid(), "other")
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    assert process_knobs.parse_variants("rt:policy=fifo")[0].policy == "fifo"
    with pytest.raises(ValueError, match="policy must be one of"):
        process_knobs.parse_variants("x:policy=deadline")


@pytest.mark.unit
def test_paced_latency_is_compared_with_the_bare_socket_of_the_same_round_and_variant() -> None:
    from bench import paced

    def row(system: str, variant: str, p50: float, rnd: int = 0) -> dict[str, Any]:
        return {"system": system, "size": 100, "rate": 10_000, "round": rnd, "variant": variant,
                "p50_us": p50, "p99_us": 10 * p50}

    rows = [row("unix-socket", "a", 50.0), row("edgebus-shm", "a", 500.0),
            row("unix-socket", "b", 100.0), row("edgebus-shm", "b", 300.0),
            row("unix-socket", "a", 40.0, 1), row("edgebus-shm", "a", 200.0, 1)]
    md = paced.latency_table(rows)
    assert "| 10000 | 100 | edgebus-shm | a | 350 (500, 200) | 3500 (5000, 2000) | 7.50 (10.00, 5.00) |" in md
    assert "| 10000 | 100 | edgebus-shm | b | 300 (300) | 3000 (3000) | 3.00 (3.00) |" in md


@pytest.mark.unit
def test_hops_reports_the_supervisors_full_collection_frozen_and_not(tmp_path: Path) -> None:
    from bench import hops as H
    from edgebus.protocol import messages as M

    us = 1000
    produce, fetch = int(M.Api.PRODUCE), int(M.Api.FETCH_STANDING)

    def write(role: str, events: list[tuple[int, int, int, int, int]]) -> None:
        (tmp_path / f"{role}-1.ev").write_bytes(b"".join(H._EV.pack(*e) for e in events))

    write("prod", [(H.PB, 105 * us, 1, 0, 0), (H.PW, 110 * us, 1, 0, 0)])
    write("sup", [(H.SD, 50 * us, 2, fetch, 9), (H.SD, 150 * us, 1, produce, 5),
                  (H.SQ, 160 * us, 2, 9, 0), (H.SE, 170 * us, 1, produce, 5),
                  (H.GCX, 900 * us, 12 * us, 4200 * us, 21_900)])
    write("cons", [(H.CF, 200 * us, 9, 0, 0), (H.CR, 220 * us, 0, 0, 100 * us)])
    r = H.analyse(str(tmp_path), "shm", 100, 10_000)
    assert r["sup_full_gc"] == "12 / 4200 us, 21900 objects"
    md = H.render([{**r, "round": 0, "variant": "frozen"}], [])
    assert md[-1].endswith("| 12 / 4200 us, 21900 objects |")
