"""The one retry delay of edgebus: exponential backoff with "equal jitter".

Used by the producer (reconnecting, resending a failed batch) and the bridges (reconnecting to
MQTT, waiting for the supervisor). Not a library's retry decorator (`backoff`, `tenacity`): those
wrap a blocking call in a loop, while here the delay is an input to a scheduler (the producer's
I/O thread keeps other partitions moving while one waits), so only the delay rule is shared.
"""

from __future__ import annotations

import random

# 2**32 times the first delay is far past any cap; bounding the exponent keeps the float finite.
MAX_DOUBLINGS = 32


def backoff_delay(attempt: int, lo: float, hi: float, rng: random.Random | None = None) -> float:
    """The wait before retry number `attempt` (0 for the first): half of min(hi, lo * 2**attempt)
    fixed, plus a random part up to the other half. Never zero (for lo > 0), and many clients
    restarted together spread out instead of retrying in step."""
    base = min(hi, lo * (2 ** min(max(attempt, 0), MAX_DOUBLINGS)))
    return float(base / 2 + (rng or random).uniform(0, base / 2))
