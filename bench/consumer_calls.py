"""Python calls per poll and per record in a real consumer process at a paced rate (issue 16).

    python -m bench.consumer_calls [--rate 1000] [--duration 3] [--transports shm,socket]
                                   [--base TREE] [--out FILE.md]

One supervisor (EmbeddedBroker), one producer `send()` (linger_ms=0) paced at --rate, 100-byte
records (bench/wakeups.py's producer), one consumer with the paced benchmark's settings in its own
process, polling with `poll(50)` as bench/run.py's consumer does. The consumer counts, with
`sys.setprofile`, the Python function calls ("call") and the C function calls made from Python
("c_call") of every poll that returned records, and the records those polls returned. Counts do
not depend on the machine's load; the profiler slows the consumer, so a poll may find more than
one record (records per poll is printed with the counts). With --base TREE each transport runs
in TREE too (its own processes, importing TREE's edgebus: bench/trees.py): before and
after side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
TREE = HERE.parents[1]
# Run by path with nothing naming the tree (its callgrind child, or by hand): the bench package
# is this checkout's, found after any PYTHONPATH.
sys.path.append(str(TREE))

from bench.paced_pair import PacedPair, new_topic  # noqa: E402


def _consumer(sock: str, transport: str, topic: str, n: int, ready: Any, go: Any, done: Any,
              results: Any, top: int) -> None:
    from bench.clients import tail_consumer

    c = tail_consumer(sock, transport, topic)
    ready.put(("c", os.getpid()))
    go.wait()
    counts = {"call": 0, "c_call": 0}
    names: Counter[str] = Counter()

    def prof(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            counts["call"] += 1
            if top:
                co = frame.f_code
                names[f"{Path(co.co_filename).name}:{co.co_name}"] += 1
        elif event == "c_call":
            counts["c_call"] += 1
            if top:
                names[f"C {getattr(arg, '__qualname__', arg)}"] += 1

    got = polls = empty = calls = c_calls = 0
    hard = time.monotonic() + 120
    while got < n and time.monotonic() < hard:
        counts["call"] = counts["c_call"] = 0
        sys.setprofile(prof)
        out = c.poll(50, max_records=1_000_000)
        sys.setprofile(None)
        k = sum(len(v) for v in out.values())
        if not k:
            empty += 1
            continue
        polls += 1
        got += k
        # Less the profiler's own setprofile(None) call and the sum above (not the library's).
        calls += counts["call"]
        c_calls += counts["c_call"] - 1
    results.put(("c", got, polls, empty, calls, c_calls, names.most_common(top)))
    done.wait()
    c.close()


def one(transport: str, rate: int, duration: float, top: int) -> dict[str, Any]:
    from edgebus.testing import EmbeddedBroker

    n = int(rate * duration)
    broker = EmbeddedBroker(log_level="WARNING").start()
    try:
        topic = new_topic(broker.socket, "calls")
        pair = PacedPair(broker.socket, transport, topic, rate, n, consumer=_consumer,
                         consumer_extra=(top,))
        got = pair.run(duration + 180)
        pair.close()
    finally:
        broker.stop()
        broker.cleanup()
    _, recs, polls, empty, calls, c_calls, names = got["c"]
    return {"transport": transport, "rate": rate, "records": recs, "polls": polls,
            "empty_polls": empty, "calls_per_poll": calls / max(polls, 1),
            "c_calls_per_poll": c_calls / max(polls, 1), "records_per_poll": recs / max(polls, 1),
            "calls_per_record": calls / max(recs, 1), "top": names}


# --- instructions per poll under callgrind (--instructions) ----------------------------------------
def _callgrind_child(sock: str, transport: str, topic: str, n: int) -> None:
    """The consumer alone, run under callgrind by `instructions`: ready, go, n records, done.
    transport "bare": the bare Unix socket's consumer of bench/peers.py listening at `sock`."""
    if transport == "bare":
        _bare_child(sock, n)
        return
    from bench.clients import tail_consumer

    c = tail_consumer(sock, transport, topic)
    got = polls = 0
    while got < 20:  # warm-up (the standing fetch armed, formats compiled), not counted
        got += sum(len(v) for v in c.poll(50).values())
    print("ready", flush=True)
    sys.stdin.readline()
    got = 0
    while got < n:
        k = sum(len(v) for v in c.poll(50, max_records=1_000_000).values())
        got += k
        polls += bool(k)
    print(f"done {polls}", flush=True)
    sys.stdin.readline()
    c.close()


def _bare_child(path: str, n: int) -> None:
    from types import SimpleNamespace

    from bench.peers import UnixSocket

    c = UnixSocket.consumer(SimpleNamespace(data={"paths": [path]}, producers=1), 0)  # type: ignore[arg-type]
    got = polls = 0
    print("listening", flush=True)
    while got < 20:
        got += len(c.recv(0.05))
    print("ready", flush=True)
    sys.stdin.readline()
    got = 0
    while got < n:
        k = len(c.recv(0.05))
        got += k
        polls += bool(k)
    print(f"done {polls}", flush=True)
    sys.stdin.readline()
    c.close()


class _BareProducer:
    """u32 length + payload on a Unix socket, as bench/peers.py UnixSocket's producer."""

    def __init__(self, path: str) -> None:
        import socket

        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)

    def send(self, topic: str, value: bytes, partition: int = 0) -> Any:
        self.s.sendall(len(value).to_bytes(4, "little") + value)
        return self

    def get(self, timeout: float) -> None:
        pass

    def flush(self, timeout: float) -> None:
        pass

    def __enter__(self) -> _BareProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.s.close()


def instructions(transport: str, rate: int, n: int) -> dict[str, Any]:
    """Instructions the consumer process executes per record (callgrind, whatever the load):
    one supervisor and producer here, natively; the consumer under valgrind. The rate is low
    enough (default 50/s) that every poll finds one record although callgrind slows it ~50x."""
    import tempfile

    from bench.callgrind import callgrind_control, dumps
    from edgebus import Admin, Producer
    from edgebus.testing import EmbeddedBroker

    out_dir = Path(tempfile.mkdtemp(prefix="consumer-instr-"))
    prefix = out_dir / "callgrind.consumer"
    broker = EmbeddedBroker(log_level="WARNING").start()
    topic = f"instr-{os.getpid()}"
    err_path = out_dir / "child.stderr"  # the child's errors, shown if it dies
    err_file = open(err_path, "w")  # noqa: SIM115 (closed in the finally below)
    try:
        with Admin(socket=broker.socket, transport="socket") as a:
            a.create_topic(topic, 1)
        sock = str(out_dir / "bare.sock") if transport == "bare" else str(broker.socket)
        child = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={prefix}", "--vgdb=yes",
             "--collect-atstart=yes", sys.executable, str(HERE), "--callgrind-child",
             f"{sock}|{transport}|{topic}|{n}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err_file, text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"})
        assert child.stdin is not None and child.stdout is not None
        if transport == "bare":
            assert child.stdout.readline().strip() == "listening"
        with _BareProducer(sock) if transport == "bare" else \
                Producer(socket=broker.socket, transport=transport, linger_ms=0) as p:
            while True:  # warm-up records until the consumer says it is ready
                p.send(topic, b"w" * 100, partition=0).get(30)
                line = _ready_line(child, 0.05)
                if line == "ready":
                    break
                if child.poll() is not None:  # (was: warm-up records sent forever)
                    raise RuntimeError(f"the consumer under callgrind exited ({child.returncode})"
                                       f": {err_path.read_text()[-2000:]}")
            callgrind_control(child.pid, "--zero")
            child.stdin.write("go\n")
            child.stdin.flush()
            step = 1 / rate
            t0 = time.monotonic()
            for k in range(n):
                delay = t0 + k * step - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                p.send(topic, b"x" * 100, partition=0)
            p.flush(60)
            done = child.stdout.readline().split()
            callgrind_control(child.pid, "--dump=run")
            child.stdin.write("bye\n")
            child.stdin.flush()
            child.wait(120)
        total = dumps(prefix)["run"]
    finally:
        err_file.close()
        broker.stop()
        broker.cleanup()
    polls = int(done[1])
    return {"transport": transport, "records": n, "polls": polls, "instructions": total,
            "per_record": total / n, "per_poll": total / max(polls, 1)}


def _ready_line(child: subprocess.Popen[str], timeout: float) -> str:
    import select

    assert child.stdout is not None
    r, _, _ = select.select([child.stdout], [], [], timeout)
    return child.stdout.readline().strip() if r else ""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.consumer_calls",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--transports", default="shm,socket")
    ap.add_argument("--base", default="", help="another checkout to run beside this one")
    ap.add_argument("--top", type=int, default=0, help="also list the N most called functions")
    ap.add_argument("--instructions", action="store_true",
                    help="instead: the consumer's instructions per record under callgrind "
                         "(--rate 50 --records 300 suit it)")
    ap.add_argument("--records", type=int, default=300, help="records counted (--instructions)")
    ap.add_argument("--callgrind-child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    if a.callgrind_child:
        sock, tr, topic, n = a.callgrind_child.split("|")
        _callgrind_child(sock, tr, topic, int(n))
        return
    if a.one:
        row = instructions(a.one, a.rate, a.records) if a.instructions else \
            one(a.one, a.rate, a.duration, a.top)
        print(json.dumps(row))
        return
    if a.instructions:
        _main_instructions(a)
        return
    from bench.trees import commit, run_case  # here: a --base tree's bench/ may lack it

    trees = {"this": TREE} if not a.base else {"base": Path(a.base).resolve(), "this": TREE}
    md = [f"# consumer: Python calls per poll at {a.rate}/s, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}",
          "", f"`python -m bench.consumer_calls --rate {a.rate} --duration {a.duration} "
          f"--transports {a.transports}" + (f" --base {a.base}" if a.base else "") + "`", "",
          "Trees: " + ", ".join(f"{k} = {v} ({commit(v)})" for k, v in trees.items()), "",
          "| tree | transport | polls with records | records / poll | Python calls / poll "
          "| C calls / poll | Python calls / record | empty polls |",
          "|---|---|---|---|---|---|---|---|"]
    tops = []
    for label, tree in trees.items():
        for tr in a.transports.split(","):
            row = run_case(tree, [sys.executable, str(HERE), "--one", tr, "--rate", str(a.rate),
                                  "--duration", str(a.duration), "--top", str(a.top)])
            md.append(f"| {label} | {tr} | {row['polls']} | {row['records_per_poll']:.2f} | "
                      f"{row['calls_per_poll']:.1f} | {row['c_calls_per_poll']:.1f} | "
                      f"{row['calls_per_record']:.1f} | {row['empty_polls']} |")
            print(md[-1], flush=True)
            if a.top:
                tops += ["", f"{label} {tr}: most called (count over the run):", ""]
                tops += [f"- {name}: {k}" for name, k in row["top"]]
    md += tops
    print("\n".join(md))
    if a.out:
        Path(a.out).write_text("\n".join(md) + "\n")


def _main_instructions(a: argparse.Namespace) -> None:
    from bench.trees import commit, run_case

    trees = {"this": TREE} if not a.base else {"base": Path(a.base).resolve(), "this": TREE}
    md = [f"# consumer: instructions per record under callgrind at {a.rate}/s, "
          f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}", "",
          f"`python -m bench.consumer_calls --instructions --rate {a.rate} --records {a.records} "
          f"--transports {a.transports}" + (f" --base {a.base}" if a.base else "") + "`", "",
          "Trees: " + ", ".join(f"{k} = {v} ({commit(v)})" for k, v in trees.items()), "",
          "The consumer process alone runs under valgrind's callgrind (every instruction, user "
          "space, whatever the machine's load); the supervisor and the producer run natively. "
          "Counted from the consumer's first poll after warm-up to its last record.", "",
          "| tree | transport | records | polls with records | instructions / record "
          "| instructions / poll |", "|---|---|---|---|---|---|"]
    for tr in a.transports.split(","):
        for label, tree in trees.items():
            row = run_case(tree, [sys.executable, str(HERE), "--one", tr, "--instructions",
                                  "--rate", str(a.rate), "--records", str(a.records)], 900)
            md.append(f"| {label} | {tr} | {row['records']} | {row['polls']} | "
                      f"{row['per_record']:,.0f} | {row['per_poll']:,.0f} |")
            print(md[-1], flush=True)
    print("\n".join(md))
    if a.out:
        Path(a.out).write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
