"""The thread body every direction of a link runs (link.py up, pull.py and peer_pull.py down):
sessions, each until it fails, retried with a jittered backoff (edgebus/backoff.py) so that peers
restarted together do not retry in step; the backoff starts over after a session that came up.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from edgebus.backoff import backoff_delay
from edgebus.errors import EdgebusError, TargetUnavailableError

if TYPE_CHECKING:
    from bridges.replicator.link_status import LinkStatus

log = logging.getLogger("edgebus.replicator")

BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 30.0
# A half-open link is noticed within this many heartbeat intervals of the target's last answer
# (issue 11): the heartbeat goes after one silent interval, its answer is awaited until then.
HEARTBEAT_INTERVALS = 2
# A session that came up and moved records, or stayed up this long, worked: the backoff starts
# over after it. One that fails sooner having moved nothing (a target that takes the connection
# and drops it, again and again) counts as a failed attempt, so such a target is retried ever
# more slowly, not every 0.1 s for a year.
STABLE_SESSION_S = 10.0


def bounded_heartbeat(heartbeat: Callable[[float], None], last_answer: float, hb: float) -> float:
    """One heartbeat, its answer awaited only until HEARTBEAT_INTERVALS intervals after the
    target's last answer (monotonic time), so that the silence that ends a session is bounded
    by that count of intervals, not by one idle interval plus the request timeout; returns the
    time of its answer. The error names the count (status and log), which is what the tests
    check rather than a clock. Every direction of a link uses it (link.py, pull.py)."""
    deadline = last_answer + HEARTBEAT_INTERVALS * hb
    # A loop that came late (a slow round, a loaded host) still gives the answer a little time.
    wait = max(deadline - time.monotonic(), hb / 10)
    try:
        heartbeat(wait)
    except (EdgebusError, OSError) as e:
        raise half_open(hb, last_answer, "1 heartbeat unanswered", e) from None
    return time.monotonic()


def half_open(hb: float, last_answer: float, what: str, e: BaseException
              ) -> TargetUnavailableError:
    """The target, not the local supervisor, went silent: a TargetUnavailableError (the
    target's own kind when it has one, so that its hint says what to check there), never the
    supervisor's "is edgebus serve running?"."""
    silent = (time.monotonic() - last_answer) / hb
    # The cause's text without its hint: the class chosen here adds the right one once.
    cause = Exception.__str__(e) if isinstance(e, EdgebusError) else str(e)
    cls = type(e) if isinstance(e, TargetUnavailableError) else TargetUnavailableError
    return cls(
        f"half-open link or dead target: no answer from the target within "
        f"{HEARTBEAT_INTERVALS} heartbeat intervals (heartbeat_s {hb:g}) of its last "
        f"answer, {what} (given up after {silent:.1f} intervals of silence): {cause}")


class SessionLoop:
    """run() calls _session() until `stop` is set; _session sets _was_up once it is up, and
    _end_session() closes its connections after each one, however it ended."""

    label: str  # the direction's name in status, metrics and log lines
    stop: threading.Event
    status: LinkStatus
    _up_at: float | None = None  # monotonic time the session came up; None: not (yet) up

    @property
    def _was_up(self) -> bool:
        """This session reached "up" (the directions set it; the time is kept here)."""
        return self._up_at is not None

    @_was_up.setter
    def _was_up(self, up: bool) -> None:
        self._up_at = time.monotonic() if up else None

    def _session(self) -> None:
        raise NotImplementedError

    def _end_session(self) -> None:
        raise NotImplementedError

    def _close_session(self) -> None:
        # A target that fails to close (a Kafka producer left fatally failed by the purge of its
        # in-flight requests raises from flush) must not end the thread: the next session opens
        # the target anew and reads every cursor from it.
        try:
            self._end_session()
        except Exception:
            log.exception("link %s: closing the session failed (a new one follows)", self.label)

    def run(self) -> None:
        attempt = 0  # sessions failed in a row
        trouble = ""  # the last failure logged, its figures left out (see _trouble)
        while not self.stop.is_set():
            self.status.sessions += 1
            self._was_up = False
            failed = True
            try:
                self._session()
                failed = False  # it ended to start anew (a topic appeared), not in trouble
            except (EdgebusError, OSError) as e:
                # One line per change of trouble, not one per retry of the same (a target down
                # for a day is thousands of retries, a flapping one as many short sessions).
                if self._stable() or _trouble(e) != trouble:
                    log.warning("link %s: %s: %s (retrying)", self.label, type(e).__name__, e)
                trouble = _trouble(e)
                self.status.state, self.status.last_error = "down", str(e)
            except Exception as e:  # a bug or a library's surprise: log it, never stop the link
                if self._stable() or _trouble(e) != trouble:
                    log.exception("link %s: unexpected error (retrying)", self.label)
                trouble = _trouble(e)
                self.status.state, self.status.last_error = "down", f"{type(e).__name__}: {e}"
            finally:
                self._close_session()
            if self._stable() or not failed:
                attempt = 0  # the link worked: a new failure starts the backoff over
            self.stop.wait(backoff_delay(attempt, BACKOFF_MIN_S, BACKOFF_MAX_S))
            attempt += 1


    def _stable(self) -> bool:
        """The session came up and worked: it moved records, or stayed up STABLE_SESSION_S."""
        if self._up_at is None:
            return False
        if time.monotonic() - self._up_at >= STABLE_SESSION_S:
            return True
        with self.status.lock:  # the per-session counters (each session starts them at 0)
            return any(ps.shipped_records for ps in self.status.partitions.values())


def _trouble(e: BaseException) -> str:
    """A failure as the log compares it with the last: its kind and text without figures, so
    that a retry which differs only in a measured time ("given up after 1.5 intervals") or in
    which server or port it tried last is the same trouble."""
    return type(e).__name__ + re.sub(r"\d+(\.\d+)?", "#", str(e))
