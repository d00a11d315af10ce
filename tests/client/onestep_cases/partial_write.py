# A test case script for tests/client/test_onestep_races.py (review27b's reproducer).
# ruff: noqa  (a compact reproducer, kept as review wrote it)
# Partial socket write + notify: Python code (notify_all) runs between the write and the tail's
# lock grab. Here notify_all itself takes the I/O lock, standing for another thread (e.g. a keyed
# send in Producer._send_one: io_lock.acquire(False), then waits for the mutex) that got the GIL
# during notify_all's bytecode.
import math, socket, threading, collections
from edgebus._onestep import Sender
from edgebus.client import c_send
from edgebus.client.record_frames import FRAME_BUFFER_BYTES, PRODUCE, new_frame_buffer
from edgebus._records import ffi

class Fut:
    __slots__ = ("_batch", "_index", "_timestamp")
class One: pass
class Ch: pass
class Prod: pass

a, b = socket.socketpair()
a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
a.setblocking(False)
try:
    while True: a.send(b"z" * 4096)
except BlockingIOError:
    pass
fbuf = new_frame_buffer()
ch = Ch(); ch.lost = None; ch._timed = False; ch._last_send = 0.0; ch._sent = 0; ch._read_mark = 0; ch._send_gap = 0.0
chlock = threading.Lock()
pending = {}
import itertools
corr = itertools.count(1)
io = threading.Lock()
class Cond:
    def notify_all(self):
        io.acquire(False)   # another thread's io_lock.acquire(False) during the GIL switch
p = Prod()
p._partitions = {"t": 1}; p._sticky = {"t": 0}; p._record_max = {"t": 10**6}
p._open = {}; p._sent = {}; p._cond = Cond()
p._fast = True; p.value_serializer = None; p.key_serializer = None; p._txn = None
p._channel = ch; p._in_flight = 0; p._closed = False; p._ready = collections.deque()
p._queued_bytes = 0; p.max_in_flight = 32; p.buffer_memory = 1 << 25; p._sender_wake_at = math.inf
p._send_held = lambda *a: "held"
rest = []
def send_rest(*a): rest.append(a)
handles = lambda c: (1, a.fileno(), int(ffi.cast("uintptr_t", fbuf)), FRAME_BUFFER_BYTES, chlock, corr, pending)
ring, sock = c_send._functions()
s = Sender(p, lambda *a, **k: "py", lambda t, q: (One, b"\x00" * 20), handles, send_rest, Fut,
           threading.RLock(), io, 0, sock,
           (4, 16384, 61, 22, 5.0, 0.0005, 1.0, PRODUCE, 0xFFFFFFFF))
try:
    r = s("t", b"v" * 1000)
    print("returned", r)
except BaseException as e:
    print("raised", type(e).__name__, e)
print("send_rest called:", bool(rest), "| pending:", len(pending), "| _in_flight:", p._in_flight, "| _sent:", len(p._sent))
