"""Child process of test_group_close_race.py: races a group member's close() against a thread
that polls (joins, syncs, heartbeats, auto-commits on the group link) or commits, many times in
one process. Exit 0: every call after close() raised ClosedError, close() returned and no group
thread was left; 1: some other error or a hang (printed); a crash shows as the negative signal
number.

    python group_close_race_child.py SOCKET TOPIC RACES poll|commit|parked|rejoin

parked: a second member of the group has stopped polling, so the racing member's first
JoinGroup waits for it (up to that member's rebalance timeout, minutes) when close() comes.
rejoin: the same for a member that had joined: a third member's arrival makes it rejoin, and
that JoinGroup waits for the silent one.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from typing import Any

from edgebus import Consumer
from edgebus.errors import ClosedError

# A close() or a call racing it that has not ended this long after is a hang: close() must not
# wait on a request under way in another thread (a parked JoinGroup may wait for minutes).
JOIN_S = 30.0


def silent_member(topic: str, group: str, sock: str) -> Consumer:
    """A member that joins and then never polls again: a rebalance waits for it for minutes."""
    return Consumer(topic, group_id=group, socket=sock, auto_offset_reset="earliest",
                    max_poll_interval_ms=300_000, request_timeout_ms=5000)


def in_thread(fn: Any) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def race(sock: str, topic: str, kind: str, n: int, bad: list[str]) -> None:
    group = f"gcr-{kind}-{n}" if kind in ("parked", "rejoin") else f"gcr-{kind}-{n % 3}"
    extra: list[Consumer] = []
    if kind == "parked":
        extra.append(silent_member(topic, group, sock))
        extra[0].poll(timeout_ms=100)  # joined; it never polls again
    # Heartbeats every 100 ms: a rebalance is noticed (and rejoined) soon after it begins.
    # rejoin: the default request timeout (30 s), so that a close() waiting on requests behind
    # the parked JoinGroup shows as a hang.
    c = Consumer(topic, group_id=group, socket=sock, auto_offset_reset="earliest",
                 request_timeout_ms=30_000 if kind == "rejoin" else 5000,
                 auto_commit_interval_ms=1, heartbeat_interval_ms=100)
    if kind == "rejoin":
        c.poll(timeout_ms=100)  # joined alone
        quiet = silent_member(topic, group, sock)
        extra.append(quiet)
        joining = in_thread(lambda: quiet.poll(timeout_ms=100))  # parked until c rejoins
        while joining.is_alive():
            c.poll(timeout_ms=50)
        third = silent_member(topic, group, sock)
        extra.append(third)
        in_thread(lambda: _until_closed(third))  # a rebalance that waits for `quiet`
    elif n % 2 and kind != "parked":  # half the races start from a joined member
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
    time.sleep(random.uniform(0, 0.02) if not extra else 0.5)  # parked: the join is sent

    def close() -> None:
        try:
            c.close()
        except Exception as e:
            bad.append(f"close: {type(e).__name__}: {e}")

    closing = in_thread(close)
    closing.join(JOIN_S)
    if closing.is_alive():
        bad.append(f"{kind}: close() still runs {JOIN_S:.0f} s after it was called")
        return
    t.join(JOIN_S)
    for e in extra:
        e.close()
    if t.is_alive():
        bad.append(f"{kind}: the user thread still runs {JOIN_S:.0f} s after close()")
        return
    left = [t.name for t in threading.enumerate() if t.name.startswith("edgebus-")]
    if left:
        bad.append(f"threads left after close(): {left}")


def _until_closed(c: Consumer) -> None:
    try:
        while True:
            c.poll(timeout_ms=100)
    except ClosedError:
        return


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
