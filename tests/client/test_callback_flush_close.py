"""flush() or close() inside a send() callback, and an error of edgebus's own in the I/O thread.

A producer's callbacks run in the threads that take acknowledgements (the channel's reader, the
I/O thread, a send's reap in the caller's thread), with the producer's mutex held. Before the fix,
flush() there waited for answers only that thread could take (with a timeout it timed out,
without one it hung), and close() did the same and then joined the I/O thread, perhaps from the
I/O thread itself. Now, as Kafka's producer: flush() there raises IllegalStateError, and close()
there logs a WARNING and closes without waiting (close(0)): what is not yet acknowledged fails
with ClosedError (saying whether it may have been written), later sends raise ClosedError, the
I/O thread closes the connection and ends, and a later close() outside returns.

An OSError opening the connection (EMFILE: the process has no descriptor left) ended the I/O
thread: the batch it held stayed counted in flight, every later one stayed unsent, flush() never
returned. Now it is logged at ERROR, the batch goes back to the front, and it is sent once a
descriptor is free.

Each scenario runs in a child process against a real supervisor, on both transports; with
`linger_ms=0` the C Sender on and off (`EDGEBUS_PRODUCER_C_SEND`). Outcomes, not times: a
child's waits are bounds, so that the faults before the fix end as failures, not hangs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from edgebus import Admin

_COMMON = """
import array, collections, fcntl, json, os, sys, termios, threading
REAP = sys.argv[-1] == "reap"
if REAP:  # the reader waits unsignalled: the next send's reap takes the answers
    os.environ["EDGEBUS_SHM_ACK_LAZY_US"] = "10000000"
from edgebus import Consumer, Producer, TopicPartition
from edgebus.client import lazy_acks
from edgebus.errors import ClosedError
from edgebus.testing import wait_for

def log_values(sock, topic):
    got = []
    with Consumer(socket=sock, transport="socket") as c:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, 0)
        empty = 0
        while empty < 3:  # three empty polls after the last record
            recs = [r for rs in c.poll(timeout_ms=300).values() for r in rs]
            empty = 0 if recs else empty + 1
            got += [bytes(r.value).decode() for r in recs]
    return got

if REAP:
    lazy_acks.STEADY_S = 60.0

def answer_there(p):
    # REAP: the supervisor's answer to the last send is in the ring or socket, untaken, before the
    # next send (whose reap then runs its callbacks), or nothing is pending any more
    if not REAP or not (p._open or p._ready or p._in_flight):
        return True
    ch = p._channel
    if ch is None:
        return False
    if hasattr(ch, "_rings"):
        return ch._rings.resp.readable()
    got = array.array("i", [0])
    fcntl.ioctl(ch._sock.fileno(), termios.FIONREAD, got)
    return got[0] > 0
"""

_FLUSH = _COMMON + """
import itertools
sock, topic, transport, linger, acks, n = sys.argv[1:7]
linger, n = float(linger), int(n)
p = Producer(socket=sock, transport=transport, linger_ms=linger, acks=acks)
other = Producer(socket=sock, transport=transport, linger_ms=5)  # its own threads
outcomes, threads, others = collections.Counter(), collections.Counter(), collections.Counter()
adding = [False]
ids = itertools.count(1)  # next() is atomic: callbacks may run in several threads

def cb(_r):
    if adding[0] and threading.current_thread() is threading.main_thread():
        return  # already done: add_both ran it in the caller's own call, not in a callback
    threads[threading.current_thread().name] += 1
    try:
        p.flush(1)  # bounded: before the fix it waited for answers this thread had to take
        outcomes["returned"] += 1
    except Exception as e:
        outcomes[type(e).__name__] += 1
    # another producer's flush() in this callback waits for that producer's threads: it works
    other.send(topic, b"other-%d" % next(ids), partition=0)
    try:
        other.flush(30)
        others["returned"] += 1
    except Exception as e:
        others[type(e).__name__] += 1

futures = []
for i in range(n):
    f = p.send(topic, b"%d" % i, partition=0)
    adding[0] = True
    f.add_both(cb)
    adding[0] = False
    futures.append(f)
    wait_for(lambda: answer_there(p), 60, "an answer")
p.flush(60)
print(json.dumps({"outcomes": outcomes, "threads": threads, "others": others,
                  "all_done": all(f.done() for f in futures),
                  "errors": [repr(f.exception) for f in futures if f.exception is not None],
                  "counts": [p._in_flight, p._queued_bytes]}))
p.close(10)
other.close(10)
print(json.dumps({"log": log_values(sock, topic)}))
"""

_CLOSE = _COMMON + """
sock, topic, transport, linger, acks, n = sys.argv[1:7]
linger, n = float(linger), int(n)
p = Producer(socket=sock, transport=transport, linger_ms=linger, acks=acks)
info = {}
closed = threading.Event()

def cb(_r):
    if "thread" in info:
        return
    info["thread"] = threading.current_thread().name
    try:
        p.close()  # no timeout: before the fix it waited forever (or joined its own thread)
        info["close"] = "returned"
    except BaseException as e:
        info["close"] = repr(e)
    closed.set()

futures, raised = [], []
for i in range(n):
    try:
        f = p.send(topic, b"%d" % i, partition=0)
    except ClosedError:  # closed meanwhile (in this send's own reap, say): not taken in
        raised.append(i)
        break
    futures.append((i, f))
    if i == 5:  # the producer's steady state (REAP: later sends' reaps take the answers)
        f.add_both(cb)
    wait_for(lambda: closed.is_set() or answer_there(p), 60, "an answer")
info["closed_in_callback"] = closed.wait(30)
try:
    p.send(topic, b"after", partition=0)
    info["send_after"] = "returned"
except ClosedError:
    info["send_after"] = "ClosedError"
wait_for(lambda: all(f.done() for _, f in futures), 30, "every future's outcome")
p._thread.join(30)
info["io_thread_alive"] = p._thread.is_alive()
info["channel_left"] = p._channel is not None
p.close(10)  # outside a callback: returns (the I/O thread ended already)
outcomes = {}
for i, f in futures:
    e = f.exception
    if e is None:
        outcomes[i] = "ok"
    elif isinstance(e, ClosedError):
        outcomes[i] = "not sent" if str(e).startswith("not sent") else "closed"
    else:
        outcomes[i] = repr(e)
info.update(raised=raised, outcomes=outcomes, log=log_values(sock, topic))
print(json.dumps(info))
"""

_EMFILE = _COMMON + """
import errno, logging, os, resource
sock, topic, transport = sys.argv[1:4]
logged = threading.Event()

class Errors(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.ERROR:
            logged.set()

logging.getLogger("edgebus.producer").addHandler(Errors())
p = Producer(socket=sock, transport=transport, linger_ms=5)  # the I/O thread connects
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512), hard))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    assert e.errno == errno.EMFILE, e
during = p.send(topic, b"during", partition=0)
# the I/O thread's connection attempt met EMFILE: logged (after), or the thread ended (before)
wait_for(lambda: logged.is_set() or not p._thread.is_alive(), 30, "the connection attempt")
for fd in held:
    os.close(fd)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
info = {"io_thread_alive": p._thread.is_alive(), "logged": logged.is_set()}
try:
    p.flush(20)
    info["flush"] = "returned"
except Exception as e:
    info["flush"] = repr(e)
info["during"] = repr(during.exception) if during.done() else "pending"
try:
    after = p.send(topic, b"after", partition=0)
    after.get(20)
    info["after"] = "ok"
except Exception as e:
    info["after"] = repr(e)
info["counts"] = [p._in_flight, p._queued_bytes]
p.close(10)
info["log"] = log_values(sock, topic)
print(json.dumps(info))
"""


def _run(broker: Any, script: str, topic: str, *args: str, c_send: str = "1",
         mode: str = "plain") -> dict[str, Any]:
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(topic, 1)
    r = subprocess.run([sys.executable, "-c", script, str(broker.socket), topic, *args, mode],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "EDGEBUS_PRODUCER_C_SEND": c_send})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    got: dict[str, Any] = {}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            got.update(json.loads(line))
    assert got, out[-4000:]
    got["_out"] = out[-3000:]
    return got


# (linger_ms, acks, C Sender, mode): at linger_ms=0 the reader runs the callbacks (C settling or
# Python), or with "reap" (the reader waits unsignalled, each send paced until the answer to the
# last one is there, untaken) the next send's reap in the caller's thread; at 5 the reader
# (acks written) or the I/O thread (acks none: settled once written).
_CASES = [("0", "written", "1", "plain"), ("0", "written", "0", "plain"),
          ("0", "written", "1", "reap"), ("0", "written", "0", "reap"),
          ("5", "written", "1", "plain"), ("5", "none", "1", "plain")]


@pytest.mark.integration
@pytest.mark.parametrize(("linger", "acks", "c_send", "mode"), _CASES)
@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_flush_inside_a_callback_raises_illegal_state(broker: Any, transport: str, linger: str,
                                                      acks: str, c_send: str, mode: str) -> None:
    n = 12
    got = _run(broker, _FLUSH, f"cbflush-{transport}-{linger}-{acks}-{c_send}-{mode}", transport,
               linger, acks, str(n), c_send=c_send, mode=mode)
    out = got["_out"]
    ran = sum(got["threads"].values())
    assert ran >= 1, out  # the scenario: callbacks ran in the producer's threads or reaps
    # before: OperationTimeoutError (or "returned" late), never IllegalStateError
    assert got["outcomes"] == {"IllegalStateError": ran}, out
    if acks == "none" and linger != "0":
        assert set(got["threads"]) == {"edgebus-producer"}, out  # the I/O thread's own
    if mode == "reap":
        assert "MainThread" in got["threads"], out  # a send's reap ran some
    assert got["all_done"] and got["errors"] == [], out
    assert got["counts"] == [0, 0], out
    assert got["others"] == {"returned": ran}, out
    log = got["log"]
    assert [v for v in log if not v.startswith("other-")] == [str(i) for i in range(n)], out
    assert sorted(v for v in log if v.startswith("other-")) == sorted(
        f"other-{i}" for i in range(1, ran + 1)), out  # each once


@pytest.mark.integration
@pytest.mark.parametrize(("linger", "acks", "c_send", "mode"), _CASES)
@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_close_inside_a_callback_closes_without_waiting(broker: Any, transport: str, linger: str,
                                                        acks: str, c_send: str, mode: str) -> None:
    got = _run(broker, _CLOSE, f"cbclose-{transport}-{linger}-{acks}-{c_send}-{mode}", transport,
               linger, acks, "200", c_send=c_send, mode=mode)
    out = got["_out"]
    assert got["closed_in_callback"] and got["close"] == "returned", out  # before: hung
    assert "close() inside a send() callback" in out, out  # the WARNING
    if acks == "none" and linger != "0":
        assert got["thread"] == "edgebus-producer", out  # the I/O thread did not join itself
    if mode == "reap" and got["thread"] == "MainThread":
        assert len(got["raised"]) == 1, out  # the send whose reap closed raised ClosedError
    assert got["send_after"] == "ClosedError", out
    assert not got["io_thread_alive"] and not got["channel_left"], out
    outcomes = {int(k): v for k, v in got["outcomes"].items()}
    assert set(outcomes.values()) <= {"ok", "not sent", "closed"}, out
    log = [int(v) for v in got["log"]]
    assert log == sorted(set(log)), out  # in send order, none twice
    assert set(log) <= set(outcomes), out  # nothing stored that send() did not take in
    assert not {i for i, o in outcomes.items() if o == "not sent"} & set(log), out
    if acks != "none":  # acks=none promises nothing of a record written before the close
        assert {i for i, o in outcomes.items() if o == "ok"} <= set(log), out


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_an_oserror_connecting_does_not_end_the_io_thread(broker: Any, transport: str) -> None:
    got = _run(broker, _EMFILE, f"emfile-{transport}", transport)
    out = got["_out"]
    assert got["io_thread_alive"] and got["logged"], out  # before: the thread ended
    assert got["flush"] == "returned", out  # before: OperationTimeoutError
    assert got["during"] == "None" and got["after"] == "ok", out
    assert got["counts"] == [0, 0], out
    assert got["log"] == ["during", "after"], out
