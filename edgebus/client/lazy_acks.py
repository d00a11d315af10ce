"""When a producer's reader thread may wait for acknowledgements without being signalled (issue 16).

The policy both async channels share (ShmAsyncChannel on the rings, LazySocketChannel on the
socket): while the producer sends steadily and nobody waits on a result, the reader waits
unsignalled, ACK_LAZY_GAPS average send gaps after the last send (ACK_LAZY_S at least, STEADY_S
at most), and the sender takes what came at its next send. A thread that blocks on a result
(`waiting`) or a producer holding a batch for one acknowledgement (`hurry(once=True)`) ends that:
the reader is nudged and its next wait is a signalled one. Each channel supplies `_nudge` (ending
the reader's unsignalled wait) and calls `_note_send` for every request written.

Untimed waits (issue 16, prodack16; `only_when_asked`): until its first callback
(`want_callbacks`), for a plain producer (no ordered retries, idempotence or durable hold,
whose records wait for an acknowledgement before they are sent: those want callbacks from the
start), nobody learns of an acknowledgement except by asking (a future's get(), done(),
succeeded(), failed(), exception; flush(), close(), metrics(), a send needing room), and each
way of asking either takes what came itself (the producer's `_poll_acks`: `reap(force=True)`)
or nudges the reader (`waiting`, `hurry`). So the reader's unsignalled wait needs no timer: it
is not woken every ACK_LAZY_GAPS send gaps (once per four sends at 200/s: STEADY_S caps the
wait) while the producer sends, nor when it stops. The supervisor's death (the socket's
hang-up) or a nudge ends it, or, as a bound only, ACK_UNASKED_S. With callbacks registered,
they must run without anyone asking: the timed waits above, from the first one on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from edgebus.tuning import ACK_LAZY_GAPS, ACK_LAZY_S, STEADY_S, URGENT_S

# Without callbacks (`only_when_asked`) the reader's unsignalled wait still ends after this long:
# not a timer anyone relies on (every way of asking takes or nudges), a bound on how long an
# acknowledgement can wait if a way of waiting for one were ever added without asking. Once a
# second is one wake-up per 1,000 records at 1,000/s, instead of one per 4 at 200/s before.
ACK_UNASKED_S = 1.0


class LazyAcks:
    def _init_lazy_acks(self) -> None:
        self._last_send = 0.0  # monotonic
        self._send_gap = ACK_LAZY_S  # moving average of the gaps between requests (s, <= STEADY_S)
        self._urgent_until = 0.0  # monotonic; see ACK_LAZY_S
        self._lazy_wait = False  # the reader is (about to be) in an unsignalled wait
        self._once = False  # hurry(once=True): the reader's next wait is a signalled one
        # Threads blocked on an acknowledgement right now (waiting()): while any is, no wait is
        # lazy. A count, not only hurry()'s time window: a waiter whose nudge came before its
        # response (consumed by a wait that found nothing), or whose window ran out before the
        # reader looked (a descheduled reader), would otherwise sit out a whole lazy wait.
        # A list of one count, so that a producer can share its own (share_waiters): a thread
        # that began to wait before this channel existed counts here too.
        self._waiters = [0]
        self._waiters_lock = threading.Lock()
        # Unsignalled waits are timed, so that callbacks run without anyone asking; False (a
        # producer's only_when_asked, until want_callbacks): they have no timer (module doc).
        self._timed = True

    def _note_send(self) -> None:
        now = time.monotonic()
        gap = now - self._last_send
        self._send_gap += ((gap if gap < STEADY_S else STEADY_S) - self._send_gap) / 4
        self._last_send = now

    def _lazy_until(self, now: float) -> float:
        """When the reader's unsignalled wait must end; 0: no lazy wait now (someone waits, a
        hurry() window, laziness off, or, with callbacks registered, no steady sending: the last
        send is not recent); ACK_UNASKED_S from now without callbacks (module docstring)."""
        if not ACK_LAZY_S or self._waiters[0] or now < self._urgent_until:
            return 0.0
        if not self._timed:
            return now + ACK_UNASKED_S
        last = self._last_send
        if now - last >= STEADY_S:
            return 0.0
        span = ACK_LAZY_GAPS * self._send_gap
        until = last + max(ACK_LAZY_S, span if span < STEADY_S else STEADY_S)
        return until if until > now else 0.0

    def _nudge(self) -> None:
        raise NotImplementedError

    def share_waiters(self, count: list[int], lock: threading.Lock) -> None:
        """Count another's blocked threads as this channel's waiters (a producer's, kept across
        its channels, changed under `lock`): one that blocked before this channel existed, and
        so never entered its waiting(), must not meet an untimed wait. A wait under way is
        nudged if any blocks now."""
        self._waiters, self._waiters_lock = count, lock
        if count[0]:
            self.hurry()

    def only_when_asked(self) -> None:
        """Nobody needs an acknowledgement before asking for it (a plain producer without
        callbacks): unsignalled waits have no timer from the next one on."""
        self._timed = False

    def want_callbacks(self) -> None:
        """The producer has callbacks to run: from now on every unsignalled wait is timed (a
        wait under way without a timer is nudged, so that the next one is)."""
        if not self._timed:
            self._timed = True
            if self._lazy_wait:
                self._nudge()

    def hurry(self, once: bool = False) -> None:
        """Someone waits for an acknowledgement: deliver them as they come for a while; once:
        only the next one (a producer's batch held until it comes)."""
        if once:
            self._once = True  # before looking at _lazy_wait, which the reader sets before _once
        else:
            self._urgent_until = time.monotonic() + URGENT_S
        if self._lazy_wait:
            self._nudge()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Entered while a thread blocks on an acknowledgement: every wait of the reader is
        signalled until it leaves (and a lazy wait under way is nudged now)."""
        with self._waiters_lock:
            self._waiters[0] += 1
        try:
            self.hurry()  # after the count: a reader that missed the count is nudged
            yield
        finally:
            with self._waiters_lock:
                self._waiters[0] -= 1
