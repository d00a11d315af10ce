"""bench/hops.py: a record's hops from the three processes' stamps (the producer's batches in
order, the supervisor's PRODUCE dispatches in order, the consumer's answers matched to the
supervisor's by correlation id and occurrence); a real run has every record received in its
hops, and a run whose stamps miss the records (a C path on) stops with an error naming them
instead of printing hops of nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import hops as H
from edgebus.protocol import messages as M

TREE = Path(__file__).resolve().parents[1]

US = 1000  # stamps are ns


def _write(d: Path, role: str, events: list[tuple[int, int, int, int, int]]) -> None:
    (d / f"{role}-1.ev").write_bytes(b"".join(H._EV.pack(*e) for e in events))


@pytest.mark.unit
def test_hops_of_a_held_record_and_of_one_answered_inside_the_append(tmp_path: Path) -> None:
    produce, fetch = int(M.Api.PRODUCE), int(M.Api.FETCH_STANDING)
    # Record 0 sent at 100 us, written alone; record 1 sent at 120 us, held, written with 2 at 300.
    _write(tmp_path, "prod", [
        (H.PB, 105 * US, 1, 0, 0), (H.PW, 110 * US, 1, 0, 0),
        (H.PB, 300 * US, 2, 0, 0), (H.PW, 310 * US, 2, 0, 0)])
    _write(tmp_path, "sup", [
        (H.SD, 50 * US, 2, fetch, 9), (H.SE, 51 * US, 2, fetch, 9),  # the consumer's connection
        (H.SD, 150 * US, 1, produce, 5), (H.SQ, 160 * US, 2, 9, 0), (H.SE, 170 * US, 1, produce, 5),
        # the second PRODUCE: no fetch parked, answered later
        (H.SD, 400 * US, 1, produce, 6), (H.SE, 420 * US, 1, produce, 6),
        (H.SQ, 500 * US, 2, 9, 0)])
    _write(tmp_path, "cons", [
        (H.CF, 200 * US, 9, 0, 0), (H.CR, 220 * US, 0, 0, 100 * US),
        (H.CF, 600 * US, 9, 1, 2), (H.CR, 650 * US, 1, 1, 120 * US),
        (H.CR, 650 * US, 2, 2, 290 * US)])
    r = H.analyse(str(tmp_path), "shm", 100, 10_000)
    assert r["records"] == 3 and r["batches"] == 2 and r["answers"] == 2
    # sorted by total: record 0 (120 us), record 2 (360 us), record 1 (530 us)
    p50 = r["p50"]  # the middle record: 2, sent at 290 us
    assert p50["total_us"] == 360
    assert (p50["held"], p50["write"], p50["sup_wake"], p50["append"], p50["to_answer"],
            p50["cons_wake"], p50["decode"]) == (10, 10, 90, 20, 80, 100, 50)
    assert r["p99"]["total_us"] == 530  # record 1: held 180 us behind record 0's request
    assert r["p99"]["held"] == 180
    md = H.render([{**r, "round": 0, "variant": "after"}], ["--rounds", "1"])
    assert any(line.startswith("| 0 | shm | after | 100 | p50 | 360.0 |") for line in md)


def _one_record_answered_inside_the_dispatch(d: Path) -> None:
    produce, fetch = int(M.Api.PRODUCE), int(M.Api.FETCH_STANDING)
    _write(d, "prod", [(H.PB, 105 * US, 1, 0, 0), (H.PW, 110 * US, 1, 0, 0)])
    _write(d, "sup", [
        (H.SD, 50 * US, 2, fetch, 9),
        (H.SD, 150 * US, 1, produce, 5), (H.SQ, 160 * US, 2, 9, 0), (H.SE, 170 * US, 1, produce, 5)])
    _write(d, "cons", [(H.CF, 200 * US, 9, 0, 0), (H.CR, 220 * US, 0, 0, 100 * US)])


@pytest.mark.unit
def test_an_answer_inside_the_dispatch_ends_the_append_hop(tmp_path: Path) -> None:
    _one_record_answered_inside_the_dispatch(tmp_path)
    hop = H.analyse(str(tmp_path), "shm", 100, 10_000)["p50"]
    assert (hop["append"], hop["to_answer"], hop["cons_wake"], hop["decode"]) == (10, 0, 40, 20)


@pytest.mark.unit
def test_a_case_whose_stamps_miss_its_records_is_an_error(tmp_path: Path) -> None:
    _one_record_answered_inside_the_dispatch(tmp_path)
    r = H.analyse(str(tmp_path), "shm", 100, 10_000)
    H.check_measured({**r, "received": 1})  # the one record received has its hops
    # ten received, one stamped by the producer and the supervisor (as with the C send and plane)
    with pytest.raises(H.NothingMeasured, match=r"1 of 10 records .*PRODUCE dispatches \(Dispatcher"):
        H.check_measured({**r, "received": 10})
    with pytest.raises(H.NothingMeasured, match="the consumer received no record"):
        H.check_measured({**r, "received": 0})


def _hops(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.hops", "--rate", "500", "--duration", "1",
                           "--sizes", "100", "--out", str(tmp_path / "hops.md"), *args],
                          cwd=TREE, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.integration
def test_a_real_run_has_every_record_in_its_hops(tmp_path: Path) -> None:
    """Real supervisor, producer and consumer (the Python paths hops forces): each transport's
    500 records are matched stamp for stamp (the first 10% left out as warm-up); before, the C
    paths' records went by none of the stamped methods (1 and 0 of 1,000 measured)."""
    run = _hops(tmp_path, "--transports", "shm,socket")
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {}
    for line in (tmp_path / "hops.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 12 and cells[0] == "0":  # the per-case table: round, path, ...
            rows[cells[1]] = int(cells[4])
    assert rows == {"shm": 450, "socket": 450}, run.stdout[-3000:]
    assert "The Python paths (the C send, the C data plane and parked loop, the C take off)" in \
        (tmp_path / "hops.md").read_text()


@pytest.mark.integration
def test_a_run_on_the_c_plane_stops_naming_the_missing_stamps(tmp_path: Path) -> None:
    """The supervisor's C data plane and parked loop on (a variant's environment overrides hops'
    own): its PRODUCEs are appended without Dispatcher.dispatch_frame, so the run exits with an
    error saying so, and writes no report; before, it printed a table of 0 or 1 records."""
    run = _hops(tmp_path, "--transports", "shm", "--variants",
                "c:EDGEBUS_SHM_C_PLANE=1+EDGEBUS_SOCKET_C_PLANE=1+EDGEBUS_SHM_C_PARK=1")
    assert run.returncode != 0
    assert "bench.hops: shm, 100 B, variant c:" in run.stderr, run.stderr[-3000:]
    assert "PRODUCE dispatches (Dispatcher.dispatch_frame): " in run.stderr
    assert not (tmp_path / "hops.md").exists()


@pytest.mark.integration
def test_the_no_window_variant_measures_too(tmp_path: Path) -> None:
    """EDGEBUS_HOPS_NO_WINDOW=1 (the supervisor's standing fetch as before lat16): its wrapping
    imported two modules under the names of two stamp kinds, so the supervisor's stamps of held
    and pended answers were modules (its stamp file was never written) or, without the variant,
    unbound names (a NameError in the supervisor at each held answer)."""
    run = _hops(tmp_path, "--transports", "shm", "--variants", "nw:EDGEBUS_HOPS_NO_WINDOW=1")
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line for line in (tmp_path / "hops.md").read_text().splitlines()
            if line.startswith("| 0 | shm | nw | 100 | 450 |")]
    assert len(rows) == 1 and not rows[0].endswith("| - |"), run.stdout[-3000:]
