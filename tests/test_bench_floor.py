"""bench/floor.py, the relay floor row and the fair stamps of bench/run.py, and the fsync bracket of
bench/cost.py (issue 16): verdicts on given figures, and real processes (socat, forked
producer and consumer) for the relay and the stamps. Nothing here asserts a speed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bench import cost, floor, peers
from bench import run as R


def _paced_row(system: str, rate: int, cpu: float, server: float, rnd: int = 0) -> dict[str, Any]:
    return {"system": system, "api": "send", "size": 100, "topology": "1->1", "mode": "latency", "rate": rate,
            "round": rnd, "cpu_us_per_msg": cpu, "cpu_us_server": server}


@pytest.mark.unit
def test_fsync_bracket_uses_the_mean_and_flags_a_disk_that_moved() -> None:
    steady = cost.fsync_bracket({"p50_us": 180.0}, {"p50_us": 220.0})
    assert (steady["p50_us"], steady["spread"], steady["conclusive"]) == (200.0, 1.22, True)
    moved = cost.fsync_bracket({"p50_us": 176.0}, {"p50_us": 2400.0})
    assert moved["conclusive"] is False and moved["spread"] == 13.64
    # exactly 2x is still conclusive; a zero reading is not
    assert cost.fsync_bracket({"p50_us": 100.0}, {"p50_us": 200.0})["conclusive"] is True
    assert cost.fsync_bracket({"p50_us": 0.0}, {"p50_us": 200.0})["conclusive"] is False


@pytest.mark.unit
def test_the_durable_check_is_neither_met_nor_missed_when_fsync_moved() -> None:
    durable = {"system": "edgebus-shm-durable", "section": "durable", "mode": "latency",
               "p50_us": 500.0, "sent": 10, "received": 10}

    def check(fsync: dict[str, Any]) -> dict[str, Any]:
        goals = cost.targets([durable], fsync)
        return next(g for g in goals if g["target"].startswith("durable paced 10,000/s: p50"))

    ok = check(cost.fsync_bracket({"p50_us": 200.0}, {"p50_us": 300.0}))
    assert ok["value"] == 2.0 and ok["met"] is True and "note" not in ok
    moved = check(cost.fsync_bracket({"p50_us": 100.0}, {"p50_us": 900.0}))
    assert moved["met"] is None and "not conclusive" in moved["note"]
    text = "\n".join(cost.render([], cost.fsync_bracket({"p50_us": 100.0}, {"p50_us": 900.0}), [moved]))
    assert "not conclusive in this run" in text and "100.0 us / 900.0 us" in text


@pytest.mark.unit
def test_ratios_to_the_floor_and_to_redis_within_a_round() -> None:
    rows = [_paced_row(floor.FLOOR, 1000, 100.0, 20.0), _paced_row(floor.REDIS, 1000, 300.0, 80.0),
            _paced_row("edgebus-shm", 1000, 330.0, 130.0),
            # another round: compared with its own floor only
            _paced_row(floor.FLOOR, 1000, 200.0, 40.0, rnd=1),
            _paced_row("edgebus-shm", 1000, 330.0, 130.0, rnd=1)]
    got = floor.annotate(rows)
    assert got[2] == pytest.approx({"per_redis": 1.1, "per_floor": 3.3, "server_per_floor": 6.5})
    assert got[4]["per_floor"] == pytest.approx(1.65) and got[4]["per_redis"] is None


@pytest.mark.unit
def test_the_verdict_says_whether_a_relay_alone_fits_under_half_of_redis() -> None:
    rows = [_paced_row(floor.FLOOR, 1000, c, 20.0, rnd=i) for i, c in enumerate((100.0, 120.0, 110.0))]
    rows += [_paced_row(floor.REDIS, 1000, c, 80.0, rnd=i) for i, c in enumerate((330.0, 300.0, 360.0))]
    rows += [_paced_row(floor.FLOOR, 10_000, 60.0, 10.0), _paced_row(floor.REDIS, 10_000, 110.0, 30.0)]
    low, high = floor.verdicts(rows)
    # medians: floor 110, Redis 330 -> goal 165, 55 us left for a broker's own work
    assert (low["rate"], low["floor_us"], low["goal_us"], low["reachable"]) == (1000, 110.0, 165.0, True)
    assert low["budget_us"] == 55.0 and low["rounds"] == 3
    # a relay alone above half of Redis: no broker woken per message reaches the goal
    assert high["reachable"] is False and high["floor_per_goal"] == pytest.approx(60 / 55)
    assert "no: the relay alone is 1.09 x the goal" in "\n".join(floor.render_verdicts([high]))


@pytest.mark.integration
@pytest.mark.skipif(peers.SocatRelay.available() is not None,
                    reason=str(peers.SocatRelay.available()))
def test_the_relay_forwards_every_record_and_its_cpu_is_counted() -> None:
    R.RATE = 1000
    try:
        row = R.run_case(peers.SocatRelay(), floor.FLOOR, "send", 100, 1, 1, True, 0.3, None)
    finally:
        R.RATE = 10_000
    assert "errors" not in row
    assert row["sent"] == row["received"] == 300
    # socat was there and was counted, although it had exited (a zombie) when read
    assert row["cpu_us_server"] > 0
    assert row["server_syscr_per_msg"] > 0 and row["server_syscw_per_msg"] > 0


class _StalledProducer(peers.UnixSocket):
    """The bare socket whose producer stalls once, after sending record STALL_AT: the records
    after it go out late, as behind a producer blocked on a slow broker."""

    STALL_AT = 150
    STALL_S = 0.1

    @staticmethod
    def producer(ctx: peers.Ctx, i: int) -> Any:
        inner = peers.UnixSocket.producer(ctx, i)
        seq = [0]

        class P:
            def send(self, payload: bytes) -> None:
                inner.send(payload)
                seq[0] += 1
                if seq[0] == _StalledProducer.STALL_AT:
                    time.sleep(_StalledProducer.STALL_S)

            def flush(self) -> None:
                inner.flush()

            def close(self) -> None:
                inner.close()

        return P()


@pytest.mark.integration
def test_latency_counts_from_the_scheduled_send_time() -> None:
    # 300 records at 1,000/s; the producer stalls 100 ms after record 150. Stamped when send()
    # ran, the late records would look as fast as the others; stamped with their schedule, the
    # ~10 records due in the first 90 ms of the stall are each at least 90 ms late (over 1 % of
    # the 270 records after the warm-up), whatever the machine's speed.
    R.RATE = 1000
    try:
        row = R.run_case(_StalledProducer(), "stalled", "send", 100, 1, 1, True, 0.3, None)
    finally:
        R.RATE = 10_000
    assert row["sent"] == row["received"] == 300
    assert row["p99_us"] >= 90_000


@pytest.mark.unit
def test_the_cost_section_shows_each_rate_against_its_own_floor() -> None:
    # `python -m bench`: 1,000/s rows from the cost section, 10,000/s from the main latency runs
    main = [dict(_paced_row(s, 10_000, c, v), round=0) for s, c, v in (
        (floor.FLOOR, 50.0, 10.0), (floor.REDIS, 150.0, 35.0), ("edgebus-shm", 90.0, 35.0))]
    section = [dict(_paced_row(s, 1000, c, v), section="paced") for s, c, v in (
        (floor.FLOOR, 100.0, 18.0), (floor.REDIS, 250.0, 60.0), ("edgebus-shm", 275.0, 110.0))]
    durable = dict(_paced_row("edgebus-shm-durable", 10_000, 60.0, 24.0), section="durable")
    text = "\n".join(cost.render([*section, durable], None, [], main))
    assert "| 1000 | 100 | edgebus-shm | 1 | 275.0 | 110.0 | - / - / - | 1.10 | 2.75 | 6.11 |" in text
    assert "| 10000 | 100 | edgebus-shm | 1 | 90.0 | 35.0 | - / - / - | 0.60 | 1.80 | 3.50 |" in text
    assert "| 10000 | 100 | edgebus-shm-durable |" not in text  # not a paced acks=written row
    assert "| 1000 | 100 | 100.0 | 18.0 | 250.0 (60.0) | 125.0 | 0.40 | 0.80 | yes, 25 us/msg" in text


def _rounds(rate: int, figures: list[tuple[str, float, float, float]]) -> list[dict[str, Any]]:
    """The cost section's paced rows of three rounds: (system, CPU per round 0, 1, 2)."""
    out = []
    for rnd in range(3):
        for system, *cpus in figures:
            out.append(dict(_paced_row(system, rate, cpus[rnd], cpus[rnd] / 4, rnd=rnd),
                            section="paced", p50_us=100.0 * (rnd + 1) if system == "edgebus-shm"
                            else 50.0, p99_us=400.0 + rnd, server_cpu_percent=3.0 + rnd))
    return out


@pytest.mark.unit
def test_the_cost_targets_are_medians_of_each_rounds_own_ratio() -> None:
    # Redis moves between rounds; edgebus with it: each round's own ratio is 0.5, 0.6, 0.4, while
    # a ratio of medians (CPU 150 over Redis 300) would say 0.5 and a single case anything.
    rows = _rounds(1000, [(floor.REDIS, 300.0, 250.0, 400.0), ("edgebus-shm", 150.0, 150.0, 160.0),
                          ("unix-socket", 50.0, 50.0, 50.0)])
    # a main latency row of the same rate and size is not one of the rounds
    rows.append(_paced_row("edgebus-shm", 1000, 9999.0, 1.0))
    goals = {g["target"]: g for g in cost.targets(rows, None)}
    shm = goals["CPU/msg edgebus-shm / Redis Streams at 1,000/s"]
    assert shm["value"] == 0.5 and shm["rounds"] == [0.5, 0.6, 0.4] and shm["met"] is True
    assert goals["CPU/msg edgebus-socket / Redis Streams at 1,000/s"]["value"] is None
    assert goals["supervisor % of a core at 1,000/s (shm)"]["rounds"] == [3.0, 4.0, 5.0]
    text = "\n".join(cost.render(rows, None, list(goals.values())))
    assert "are the median of 3 alternated rounds" in text
    assert "| CPU/msg edgebus-shm / Redis Streams at 1,000/s | 0.5 | 0.5 | yes | 1.0 | 3: 0.5, 0.6, 0.4 |" in text


@pytest.mark.unit
def test_the_p50_targets_at_10000_come_from_the_rounds_when_there_are_rounds() -> None:
    rows = _rounds(10_000, [("unix-socket", 40.0, 40.0, 40.0), ("edgebus-shm", 100.0, 90.0, 110.0),
                            ("edgebus-socket", 120.0, 120.0, 120.0)])
    goals = {g["target"]: g for g in cost.targets(rows, None)}
    # shm p50 100, 200, 300 us against the bare socket's 50: 2, 4, 6
    bare = goals["shm p50 / unix-socket p50 at 10,000/s, 100 B"]
    assert bare["value"] == 4.0 and bare["rounds"] == [2.0, 4.0, 6.0] and bare["met"] is False
    assert goals["shm p99 at 10,000/s, 100 B"]["rounds"] == [400.0, 401.0, 402.0]
    # socket p50 50 against shm's 100, 200, 300
    assert goals["socket p50 / shm p50 at 10,000/s, 100 B"]["rounds"] == [0.5, 0.25, 0.167]
    # 1 KiB: no rounds, the main latency rows (none here)
    assert goals["shm p50 / unix-socket p50 at 10,000/s, 1024 B"]["value"] is None


@pytest.mark.unit
def test_the_floor_table_gives_each_rounds_value_and_keeps_main_rows_the_rounds_do_not_cover() -> None:
    rows = _rounds(10_000, [(floor.FLOOR, 60.0, 70.0, 80.0), (floor.REDIS, 120.0, 140.0, 100.0),
                            ("edgebus-shm", 60.0, 70.0, 60.0)])
    main = [dict(_paced_row(s, 10_000, c, 1.0), round=0) for s, c in (
        (floor.FLOOR, 1.0), (floor.REDIS, 1.0), ("edgebus-shm", 1.0))]  # covered by the rounds
    main += [dict(_paced_row(s, 10_000, c, 10.0), size=1024) for s, c in (
        (floor.FLOOR, 50.0), ("edgebus-shm", 100.0))]
    text = "\n".join(cost.floor_table(main + rows))
    assert ("| 10000 | 100 | edgebus-shm | 3 | 60.0 (60.0, 70.0, 60.0) | 15.0 (15.0, 17.5, 15.0) "
            "| - / - / - | 0.50 (0.50, 0.50, 0.60) | 1.00 (1.00, 1.00, 0.75) ") in text
    assert "| 10000 | 1024 | edgebus-shm | 1 | 100.0 | 10.0 | - / - / - | - | 2.00 | 1.00 |" in text
    assert "| 1.0 |" not in text  # the main 100 B rows are not mixed into the rounds


@pytest.mark.integration
@pytest.mark.skipif(peers.SocatRelay.available() is not None,
                    reason=str(peers.SocatRelay.available()))
def test_paced_rounds_alternate_the_systems_and_tag_each_round() -> None:
    from bench import paced, process_knobs

    adapters = {"unix-socket": (peers.UnixSocket(), None), floor.FLOOR: (peers.SocatRelay(), None)}
    seen: list[dict[str, Any]] = []
    rates: list[int] = []
    rows = paced.run_rounds(lambda _v, n: adapters.get(n), process_knobs.parse_variants(""),
                            ["unix-socket", "not-installed", floor.FLOOR], [1000], [100], 2, 0.2,
                            set_rate=rates.append, progress=seen.append)
    assert [(r["round"], r["system"]) for r in rows] == [
        (0, "unix-socket"), (0, floor.FLOOR), (1, floor.FLOOR), (1, "unix-socket")]
    assert seen == rows and rates == [1000, 1000, 10_000] and R.RATE == 10_000  # restored
    assert all(r["sent"] == r["received"] == 200 and r["rate"] == 1000 for r in rows)
    assert all(r["cpu_us_per_msg"] > 0 for r in rows)
    ratios = paced.round_ratios(rows)
    assert len(ratios[(floor.FLOOR, 100, 1000, "default")]["per_floor"]) == 2


@pytest.mark.unit
def test_the_1kib_send_batch_target_is_the_median_of_each_rounds_pair() -> None:
    def tp(system: str, mb: float, rnd: int | None, section: str | None) -> dict[str, Any]:
        r = {"system": system, "api": "batch", "size": 1024, "topology": "1->1",
             "mode": "throughput", "mb_per_s": mb}
        return r if rnd is None else dict(r, round=rnd, section=section)

    # the main rows (one case: 0.25) and three rounds of the section: 0.6, 0.3, 0.55
    main = [tp("edgebus-shm", 100.0, None, None), tp("unix-socket", 400.0, None, None)]
    rounds = [tp(s, mb, rnd, cost.THROUGHPUT) for rnd, pair in enumerate(
        ((300.0, 500.0), (300.0, 1000.0), (330.0, 600.0)))
        for s, mb in zip(("edgebus-shm", "unix-socket"), pair, strict=True)]
    target = "1 KiB send_batch shm MB/s / unix-socket MB/s"
    got = next(g for g in cost.targets(main + rounds, None) if g["target"] == target)
    assert got["value"] == 0.55 and got["rounds"] == [0.6, 0.3, 0.55] and got["met"] is True
    # without the section's rounds: the main rows' single pair, as before
    alone = next(g for g in cost.targets(main, None) if g["target"] == target)
    assert alone["value"] == 0.25 and alone["met"] is False


@pytest.mark.unit
def test_the_1kib_latency_targets_are_medians_of_the_rounds_when_there_are_rounds() -> None:
    # the cost section's 1 KiB rounds at 10,000/s: shm p50 100, 200, 300 against the bare 50
    rows = [dict(r, size=1024) for r in _rounds(10_000, [
        ("unix-socket", 40.0, 40.0, 40.0), ("edgebus-shm", 100.0, 90.0, 110.0),
        ("edgebus-socket", 120.0, 120.0, 120.0)])]
    # a main latency row of that rate and size (one case, ratio 10) is not what is judged
    main = [dict(_paced_row(s, 10_000, 1.0, 1.0), size=1024, p50_us=p50, p99_us=5000.0)
            for s, p50 in (("edgebus-shm", 500.0), ("unix-socket", 50.0))]
    goals = {g["target"]: g for g in cost.targets(main + rows, None)}
    bare = goals["shm p50 / unix-socket p50 at 10,000/s, 1024 B"]
    assert bare["value"] == 4.0 and bare["rounds"] == [2.0, 4.0, 6.0] and bare["met"] is False
    assert goals["shm p99 at 10,000/s, 1024 B"]["rounds"] == [400.0, 401.0, 402.0]
    assert goals["socket p50 / shm p50 at 10,000/s, 1024 B"]["rounds"] == [0.5, 0.25, 0.167]
    # the 100 B targets are not taken from the 1 KiB rounds
    assert goals["shm p50 / unix-socket p50 at 10,000/s, 100 B"]["value"] is None
    # without the rounds (an older run, --no-cost): the main rows' single case
    alone = {g["target"]: g for g in cost.targets(main, None)}
    one = alone["shm p50 / unix-socket p50 at 10,000/s, 1024 B"]
    assert one["value"] == 10.0 and one["rounds"] == [10.0]


@pytest.mark.unit
def test_defaults_against_tuned_are_the_median_of_each_rounds_pair() -> None:
    def tp(system: str, api: str, mps: float, rnd: int | None) -> dict[str, Any]:
        r = {"system": system, "api": api, "size": 100, "topology": "1->1", "mode": "throughput",
             "msgs_per_s": mps}
        return r if rnd is None else dict(r, round=rnd, section="defaults")

    # main rows: tuned batch 1,000,000 (a single case would say 0.5 for the defaults' 500,000)
    main = [tp("edgebus-shm", "batch", 1e6, None), tp("edgebus-shm", "send", 1e5, None),
            tp("edgebus-shm-defaults-all", "batch", 5e5, None)]
    # three rounds: tuned batch 500k, 1M, 400k; defaults 450k, 1.1M, 300k -> 0.9, 1.1, 0.75
    rounds = []
    for rnd, (tuned, d_all, d_cons) in enumerate(((5e5, 4.5e5, 5e5), (1e6, 1.1e6, 9e5),
                                                  (4e5, 3e5, 4e5))):
        rounds += [tp("edgebus-shm", "batch", tuned, rnd), tp("edgebus-shm", "send", 1e5, rnd),
                   tp("edgebus-shm-defaults-all", "batch", d_all, rnd),
                   tp("edgebus-shm-defaults-all", "send", 9.5e4, rnd),
                   tp("edgebus-shm-defaults-consumer", "batch", d_cons, rnd)]
    goals = {g["target"]: g for g in cost.targets(main + rounds, None)}
    sb = goals["defaults / tuned: send_batch"]
    assert sb["value"] == 0.9 and sb["rounds"] == [0.9, 1.1, 0.75] and sb["met"] is True
    assert goals["defaults / tuned: send"]["rounds"] == [0.95, 0.95, 0.95]
    assert goals["defaults / tuned: consumer"]["rounds"] == [1.0, 0.9, 1.0]
    # without the rounds: the defaults row against the main tuned row, one case
    alone = {g["target"]: g for g in cost.targets(main, None)}
    assert alone["defaults / tuned: send_batch"]["value"] == 0.5
    assert alone["defaults / tuned: send"]["value"] is None
