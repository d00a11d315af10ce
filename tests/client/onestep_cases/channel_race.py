# A test case script for tests/client/test_onestep_races.py (review27b's reproducer).
# ruff: noqa  (a compact reproducer, kept as review wrote it)
import sys, threading, time
from edgebus._onestep import Sender

class Fut:
    __slots__ = ("_batch", "_index", "_timestamp")

class One:
    pass

class Ch:
    pass

class Prod:
    pass

p = Prod()
ch = Ch()
p._partitions = {"t": 1}; p._sticky = {"t": 0}; p._record_max = {"t": 10**6}
p._open = {}; p._sent = {}; p._cond = threading.Condition(threading.RLock())
p._fast = True; p.value_serializer = None; p.key_serializer = None; p._txn = None
p._channel = ch; p._in_flight = 0
p._send_held = lambda *a: "held"
calls = []
def handles(c):
    calls.append(c)
    time.sleep(0.2)  # Python code: another sender thread runs meanwhile
    return None      # "the Python path sends on it"
s = Sender(p, lambda *a, **k: "py", lambda t, q: (One, b"pre"), handles, None, Fut,
           threading.RLock(), threading.Lock(), 0, 0,
           (4, 16384, 61, 22, 5.0, 0.0005, 1.0, 0, 0xFFFFFFFF))
base = sys.getrefcount(ch)
ts = [threading.Thread(target=lambda: s("t", b"x")) for _ in range(2)]
[t.start() for t in ts]; [t.join() for t in ts]
print("handles calls:", len(calls))
calls.clear()
print("refs held beyond base while Sender alive:", sys.getrefcount(ch) - base, "(expect 1: s->ch)")
del p.__dict__["_channel"]
del s
import gc; gc.collect()
print("refs beyond base after Sender freed and producer's ref dropped:", sys.getrefcount(ch) - base + 1, "(expect 0)")
