"""bench/producer_cost.py: its reading of `strace -c` summaries, and a real one-second run of
its pacing loop alone (no supervisor needed for the `loop` row). Nothing here asserts a speed."""

from __future__ import annotations

import pytest

from bench import producer_cost as PC

# strace -c -f output as strace 6 prints it (with and without an errors column).
SUMMARY = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 52.10    0.004000           4       990           write
 30.00    0.002300           2       960           clock_nanosleep
 10.00    0.000800           3       240        12 futex
  7.90    0.000600           5       120           epoll_wait
------ ----------- ----------- --------- --------- ----------------
100.00    0.007700           3      2310        12 total
"""


@pytest.mark.unit
def test_strace_summary_gives_the_total_and_each_call() -> None:
    total, by = PC._strace_summary(SUMMARY)
    assert total == 2310
    assert by == {"write": 990, "clock_nanosleep": 960, "futex": 240, "epoll_wait": 120}


@pytest.mark.integration
def test_the_bare_loop_row_counts_its_sends_and_calls() -> None:
    res = PC.run_one("", "loop", rate=200, seconds=0.5, measure="calls")
    assert res["sent"] == 100
    main = res["calls"]["MainThread"]
    assert main["call"] >= 100  # at least the no-op send() per record
