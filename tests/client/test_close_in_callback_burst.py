"""close() inside a send() callback with a burst in flight and ready (3,000 records, linger_ms=5,
acks=1; record 100's callback calls close()): every future gets its outcome, a record said "not
sent" is not in the log, every one acknowledged is there, none twice, and after an outer close()
no reader thread or socket of the producer is left. Variant "raise": the callbacks that get the
close's ClosedError raise a BaseException (the I/O thread logs it and goes on); that skipped the
channel's close, leaving its reader thread and socket open after close() returned (review31).
Real supervisor; the producer in a child process, so its threads and fds are its own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgebus import Admin

pytestmark = pytest.mark.integration

CHILD = r'''
import collections, json, os, sys, threading, time
from edgebus import Consumer, Producer, TopicPartition
from edgebus.errors import ClosedError
from edgebus.testing import wait_for
sock, topic, transport, variant = sys.argv[1:5]
class Stop(BaseException):
    pass
p = Producer(socket=sock, transport=transport, linger_ms=5, acks=1)
info = {"variant": variant}
def closer(_r):
    info["thread"] = threading.current_thread().name
    p.close(); info["close"] = "returned"
def noter(r):
    if variant == "raise" and isinstance(r, ClosedError):
        raise Stop()
futures = []
threads_before = {t.ident for t in threading.enumerate()}
for i in range(3000):
    try:
        f = p.send(topic, b"%d" % i, partition=0)
    except ClosedError:
        break
    futures.append((i, f))
    f.add_both(closer if i == 100 else noter)
wait_for(lambda: all(f.done() for _, f in futures), 60, "every future's outcome")
p.close(10)
left = [t.name for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]
def _link(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""
fds = [fd for fd in os.listdir("/proc/self/fd") if _link(fd).startswith("socket:")]
outcomes = {}
for i, f in futures:
    e = f.exception
    outcomes[i] = ("ok" if e is None else "not sent" if str(e).startswith("not sent")
                   else "closed" if isinstance(e, ClosedError) else repr(e)[:80])
got = []
with Consumer(socket=sock, transport="socket") as c:
    tp = TopicPartition(topic, 0); c.assign([tp]); c.seek(tp, 0)
    empty = 0
    while empty < 3:
        recs = [r for rs in c.poll(timeout_ms=300).values() for r in rs]
        empty = 0 if recs else empty + 1
        got += [int(bytes(r.value)) for r in recs]
cnt = collections.Counter(got)
info.update(
    n_sent=len(futures), counts=collections.Counter(outcomes.values()),
    not_sent_in_log=sorted(i for i, o in outcomes.items() if o == "not sent" and i in cnt)[:20],
    ok_missing=sorted(i for i, o in outcomes.items() if o == "ok" and i not in cnt)[:20],
    doubled=sorted(i for i, n in cnt.items() if n > 1)[:20],
    threads_left_after_close=left, channel_attr=p._channel is not None, socket_fds_open=len(fds))
print("RESULT " + json.dumps(info))
'''



@pytest.mark.parametrize("variant", ["plain", "raise"])
@pytest.mark.parametrize("transport", ["socket", "shm"])
def test_close_inside_a_callback_of_a_burst_loses_nothing_and_leaves_nothing(
        broker, transport: str, variant: str) -> None:
    topic = f"cib-{transport}-{variant}"
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(topic, 1)
    r = subprocess.run([sys.executable, "-c", CHILD, broker.socket, topic, transport, variant],
                       capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert "RESULT " in out, out[-3000:]
    res = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert res["close"] == "returned", res
    assert not res["not_sent_in_log"] and not res["ok_missing"] and not res["doubled"], res
    assert res["threads_left_after_close"] == [], res
    assert res["socket_fds_open"] == 0 and not res["channel_attr"], res
    assert sum(res["counts"].values()) == res["n_sent"], res
