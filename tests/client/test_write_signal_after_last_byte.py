"""A signal handler that raises an OSError of its own (the signal module documentation's example)
during a request's write: CPython's sendall runs signal handlers after every chunk, the last one
included, so the exception can come with the whole frame written. The supervisor then has the
record; "not sent" would invite the caller to send it again, and store it twice (review31 did,
with the socket one-step tail, C send on and off). Only the kernel's own error (an OSError with
an errno) says bytes of the frame remain (channel.AsyncChannel._write_failed). Real supervisor,
SIGSTOPped so the record's tail write blocks (send buffer 4 KiB); a thread of the client marks
the signal pending without interrupting that write, then SIGCONTs the supervisor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from edgebus import Admin

pytestmark = pytest.mark.integration

CHILD = r'''
import collections, json, os, signal, socket, sys, threading
from edgebus import Consumer, Producer
from edgebus.testing import wait_for
sock, topic, sup_pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
def handler(signum, frame):
    raise OSError("Couldn't open device!")   # docs.python.org/3/library/signal.html example
signal.signal(signal.SIGUSR1, handler)
main_tid = threading.get_native_id()
def in_write():
    with open(f"/proc/self/task/{main_tid}/syscall") as f:
        first = f.read().split()[0]
    return first.isdigit() and int(first) in {44, 46, 1}  # sendto, sendmsg, write
p = Producer(socket=sock, transport="socket", linger_ms=0)
for i in range(5):
    p.send(topic, b"a%d" % i, partition=0).get(timeout=60)
p._channel._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
os.kill(sup_pid, signal.SIGSTOP)
def helper():
    wait_for(in_write, 120, "main blocked in the record's tail write", interval=0.01)
    signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)  # trips the flag, main not interrupted
    os.kill(sup_pid, signal.SIGCONT)
t = threading.Thread(target=helper); t.start()
wait_for(lambda: not p._io_lock.locked(), 60, "I/O thread idle")
outcome = None
try:
    f = p.send(topic, b"X" * 15000, partition=0)
    try:
        f.get(timeout=60); outcome = "ok"
    except Exception as e:
        outcome = repr(e)
except Exception as e:
    outcome = "send raised " + repr(e)
t.join()
resent = False
print("OUTCOME", outcome, flush=True)
if "not sent" in outcome:   # what the error invites: send it again (until it is not "not sent")
    for attempt in range(5):
        try:
            p.send(topic, b"X" * 15000, partition=0).get(timeout=60); resent = True; break
        except Exception as e:
            print("resend attempt", attempt, repr(e)[:160], flush=True)
p.flush(60); p.close()
seen = collections.Counter()
with Consumer(topic, socket=sock, auto_offset_reset="earliest", transport="socket") as c:
    empty = 0
    while empty < 2:
        got = c.poll(timeout_ms=500)
        recs = [r for rs in (got.values() if isinstance(got, dict) else [got]) for r in rs]
        empty = 0 if recs else empty + 1
        seen.update(bytes(r.value)[:2].decode() for r in recs)
print("RESULT " + json.dumps({"outcome": outcome, "resent": resent, "seen": seen}))
'''



@pytest.mark.parametrize("c_send", ["1", "0"])
def test_an_exception_after_the_last_byte_is_not_not_sent(broker, c_send: str) -> None:
    topic = f"after-last-byte-{c_send}"
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(topic, 1)
    try:
        r = subprocess.run([sys.executable, "-c", CHILD, broker.socket, topic,
                            str(broker.proc.pid)], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "EDGEBUS_PRODUCER_C_SEND": c_send})
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
    out = r.stdout + r.stderr
    assert "RESULT " in out, out[-3000:]
    res = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    # Whatever the outcome said, the record is in the log exactly once, and not "not sent".
    assert res["seen"].get("XX", 0) == 1, res
    assert "not sent" not in res["outcome"], res
    assert all(res["seen"].get(f"a{i}") == 1 for i in range(5)), res
