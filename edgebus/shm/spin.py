"""When to spin for the next frame: an adaptive budget per ring, from the gaps between arrivals.

Waiting for a frame costs either a spin (CPU for as long as the wait lasts) or a sleep and a
wake-up (an eventfd write by the peer, a poll/epoll return and the Python around it: tens of
microseconds of CPU, and that much latency). Spinning pays in CPU only when the next frame comes
sooner than a wake-up costs, so, as adaptive mutexes and io_uring's SQPOLL idle do, a ring is
spun on only while its recent arrivals have come closer together than SPIN_GAP_NS on average,
and then for about twice that average gap at most (SPIN_FACTOR), never longer than the caller's
limit. At 1,000 or 10,000 messages a second (gaps of 1 ms and 100 us) nobody spins: each frame
costs one wake-up. Under load (unpaced one-record sends, a consumer catching up) frames come
microseconds apart and the reader spins through the gaps as before.

`Arrivals` keeps an exponentially weighted moving average of the gaps (weight 1/4, each gap
capped at GAP_CAP_NS so that one idle minute is forgotten after a dozen frames). One instance
per ring reader, used from one thread.
"""

from __future__ import annotations

from edgebus.shm import cpu_free
from edgebus.tuning import SPIN_GAP_NS

# A gap longer than this counts as this long: "slow", and quickly forgotten once frames come fast.
GAP_CAP_NS = 1_000_000
# Spin for at most this many average gaps: long enough for the usual jitter around the average.
SPIN_FACTOR = 2


class Arrivals:
    """The recent gaps between frames on one ring, and the spin budget they justify."""

    __slots__ = ("gap", "last")

    def __init__(self) -> None:
        self.last = 0  # monotonic ns of the last arrival (0: none yet)
        self.gap = GAP_CAP_NS  # the average gap; no history counts as slow

    def arrived(self, now_ns: int) -> None:
        """Frames were found at now_ns (one call per read that found any)."""
        if self.last:
            g = now_ns - self.last
            if g > GAP_CAP_NS:
                g = GAP_CAP_NS
            self.gap += (g - self.gap) // 4
        self.last = now_ns

    def window(self, limit_ns: int) -> int:
        """How long after the last arrival spinning may go on: 0 unless frames have been coming
        closer than SPIN_GAP_NS apart, else SPIN_FACTOR average gaps, at most limit_ns."""
        gap = self.gap
        if gap > SPIN_GAP_NS:
            return 0
        w = SPIN_FACTOR * gap
        return w if w < limit_ns else limit_ns

    def spin_ns(self, now_ns: int, limit_ns: int) -> int:
        """How long to spin now, waiting for the next frame: what is left of the window, and
        only with a core to spare (edgebus.shm.cpu_free); 0 means sleep at once."""
        left = self.window(limit_ns) - (now_ns - self.last)
        if left <= 0 or not cpu_free(now_ns):
            return 0
        return left


class SharedArrivals(Arrivals):
    """Arrivals whose two counters are a C int64_t[2] {last, gap}, so that a C reader notes its
    arrivals itself (edgebus/shm/take.c eb_take_ring, the client's response ring) and the Python
    reader of the same ring sees them, and the other way round."""

    __slots__ = ("c",)

    def __init__(self) -> None:
        from edgebus.shm._ring import ffi

        self.c = ffi.new("int64_t[2]", [0, GAP_CAP_NS])

    @property
    def last(self) -> int:
        return int(self.c[0])

    @last.setter
    def last(self, v: int) -> None:
        self.c[0] = v

    @property
    def gap(self) -> int:
        return int(self.c[1])

    @gap.setter
    def gap(self, v: int) -> None:
        self.c[1] = v
