"""bench/acl_instructions.py's parts: the supervisor started under a wrapper command
(EmbeddedBroker(wrapper=...)), the wait for its loop to sleep, and the reading of callgrind's
files."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest

from bench import acl_instructions
from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.testing import EmbeddedBroker


@pytest.mark.integration
def test_supervisor_runs_under_the_wrapper_and_pid_is_its_own(tmp_path: Path) -> None:
    # nice execs the supervisor in place, as valgrind does: pid must be the supervisor's own.
    with EmbeddedBroker(tmp_path / "b", log_level="WARNING", wrapper=["nice", "-n", "7"]) as b:
        assert b.pid is not None
        proc = psutil.Process(b.pid)
        assert proc.nice() == 7
        assert "serve" in proc.cmdline()
        with Admin(socket=b.socket) as a:
            a.create_topic("instr-wrap", 1)
        acl_instructions.wait_idle(b.pid)  # an idle loop sleeps in epoll_wait
        with Producer(socket=b.socket, transport="socket", linger_ms=0) as p:
            p.send("instr-wrap", b"v", partition=0).get(30)
        with Consumer(socket=b.socket, transport="socket", enable_auto_commit=False,
                      auto_offset_reset="earliest") as c:
            c.assign([TopicPartition("instr-wrap", 0)])
            got = [r.value for recs in c.poll(10_000).values() for r in recs]
        assert got == [b"v"]
        b.restart()  # the wrapper stays for a restart
        assert psutil.Process(b.pid).nice() == 7


@pytest.mark.unit
@pytest.mark.skipif(shutil.which("valgrind") is None,
                    reason="valgrind is not installed (Debian: apt-get install valgrind)")
def test_self_counts_add_up_to_callgrinds_totals(tmp_path: Path) -> None:
    out = tmp_path / "cg.out"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "true"],
                   check=True, capture_output=True)
    text = out.read_text()
    totals = re.search(r"^totals: (\d+)", text, re.M) or re.search(r"^summary: (\d+)", text, re.M)
    assert totals is not None
    counts = acl_instructions.self_counts(out)
    # Every function's own instructions, the calls' inclusive lines left out, add up to the total.
    assert sum(counts.values()) == int(totals.group(1))
    assert not [n for n in counts if re.fullmatch(r"\(\d+\)", n)]  # compressed names resolved
    assert acl_instructions.dumps(tmp_path / "cg") == {}  # no `--dump=LABEL` in this file

