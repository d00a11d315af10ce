"""Child process of test_group_close_race.py: races a group member's close() against a thread
that polls (joins, syncs, heartbeats, auto-commits on the group link) or commits, many times in
one process. Exit 0: every call after close() raised ClosedError and no group thread was left;
1: some other error (printed); a crash shows as the negative signal number, a hang as the
parent's timeout.

    python group_close_race_child.py SOCKET TOPIC RACES poll|commit|parked

parked: a second member of the group has stopped polling, so the racing member's JoinGroup
waits for it (up to that member's rebalance timeout, minutes) when close() comes.
"""

from __future__ import annotations

import random
import sys
import threading
import time

from edgebus import Consumer
from edgebus.errors import ClosedError

# A race that has not ended this long after close() is a hang (close() waits out a request
# under way for at most its request timeout, 5 s here).
JOIN_S = 30.0


def race(sock: str, topic: str, kind: str, n: int, bad: list[str]) -> None:
    other = None
    if kind == "parked":
        other = Consumer(topic, group_id=f"gcr-{kind}-{n}", socket=sock,
                         auto_offset_reset="earliest", max_poll_interval_ms=300_000)
        other.poll(timeout_ms=100)  # joined; it never polls again, so it rejoins only at close
    c = Consumer(topic, group_id=f"gcr-{kind}-{n if other else n % 3}", socket=sock,
                 auto_offset_reset="earliest", request_timeout_ms=5000, auto_commit_interval_ms=1)
    if n % 2 and other is None:  # half the races start from a joined member, half race the join
        c.poll(timeout_ms=100)
    go = threading.Event()

    def user() -> None:
        go.wait()
        try:
            for _ in range(100_000):
                c.poll(timeout_ms=5)
                if kind == "commit":
                    c.commit()
                    c.commit_async()
        except ClosedError:
            return
        except Exception as e:  # reported by the parent
            bad.append(f"{kind}: {type(e).__name__}: {e}")

    t = threading.Thread(target=user)
    t.start()
    go.set()
    time.sleep(random.uniform(0, 0.02) if other is None else 0.3)  # parked: the join is sent
    try:
        c.close()
    except Exception as e:
        bad.append(f"close: {type(e).__name__}: {e}")
    t.join(JOIN_S)
    if other is not None:
        other.close()
    if t.is_alive():
        bad.append(f"{kind}: the user thread still runs {JOIN_S:.0f} s after close()")
        return
    left = [t.name for t in threading.enumerate() if t.name.startswith("edgebus-")]
    if left:
        bad.append(f"threads left after close(): {left}")


def main() -> int:
    sock, topic, races, kind = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    bad: list[str] = []
    for n in range(races):
        race(sock, topic, kind, n, bad)
        if bad:
            print("\n".join(sorted(set(bad))), flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
