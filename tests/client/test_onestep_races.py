"""The C Sender's (edgebus/onestep.c) handling of two races review found (2026-12-07), each
driven by a script in onestep_cases/ that gives the Sender stand-ins for the producer and its
channel, so the race is made to happen every time (a real producer makes it rare):
- a socket write that took only part of the frame while the I/O thread had to be told of the
  batch's deadline: the rest must be sent before any Python code runs (Condition.notify_all is
  Python; another thread could write after the half frame); it raised SystemError and left the
  frame unfinished;
- two threads taking up a new channel at once: the cache's references were overwritten and
  leaked;
and a Sender not made by c_send.install raises TypeError (it crashed the process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgebus.client import c_send

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(not c_send.AVAILABLE, reason="edgebus._onestep is not built")]
CASES = Path(__file__).parent / "onestep_cases"


def _run(name: str) -> str:
    r = subprocess.run([sys.executable, str(CASES / name)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_partial_write_is_finished_before_the_io_thread_is_told() -> None:
    out = _run("partial_write.py")
    assert "returned" in out and "raised" not in out, out
    assert "send_rest called: True" in out, out


def test_two_threads_taking_up_a_new_channel_leak_no_reference() -> None:
    out = _run("channel_race.py")
    assert "after Sender freed and producer's ref dropped: 0 " in out, out


def test_a_sender_not_made_by_install_raises() -> None:
    from edgebus._onestep import Sender
    with pytest.raises(TypeError, match=r"c_send\.install"):
        Sender.__new__(Sender)("t", b"x")
