"""Issue 11 item 4: a half-open link is noticed within two heartbeat intervals. The relay holds
an idle link half-open (forwards nothing, closes nothing), so only the heartbeat can notice; the
link's error names the bound it applied (intervals after the target's last answer) and how
many heartbeats went unanswered: the accounting is checked, not a clock.

The error is read from the replicator's log (one line per change of trouble), not from the
status's last_error: that is the latest session's, and the next session through the silent
relay fails a second later with its own ("no response ... within 1.0 s"), so a status read a
moment after the link went down (a loaded machine: each read is an HTTP request to the
replicator) showed that one instead. This test failed so once under parallel load (stop 23)."""

from __future__ import annotations

import pytest

from .conftest import first_error_after_up, link_status, wait_for
from .test_conformance import in_step, produce
from .test_half_open import mirrored_through_relay

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("destination", ["peer"], indirect=True)
def test_an_idle_half_open_link_is_given_up_two_heartbeat_intervals_after_its_last_answer(
        source, destination, make_replicator) -> None:
    relay, rep, port = mirrored_through_relay(source, destination, make_replicator, "hb-bound",
                                              10, heartbeat_s=0.5)
    relay.blackhole = True  # idle and silent: nothing forwarded, nothing closed
    wait_for(lambda: link_status(port)["state"] == "down",
             what=f"the heartbeat to notice the half-open link:\n{rep.log()[-2000:]}")
    err = first_error_after_up(rep.log(), "l1")
    assert "half-open link" in err, err
    assert "within 2 heartbeat intervals (heartbeat_s 0.5) of its last answer" in err, err
    assert "1 heartbeat unanswered" in err, err
    relay.blackhole = False  # it keeps dialling and comes back by itself
    produce(source, "hb-bound", 5)
    wait_for(lambda: in_step(source, destination, "hb-bound", 1), timeout=60,
             what=f"the link back:\n{rep.log()[-2000:]}")
    relay.close()
