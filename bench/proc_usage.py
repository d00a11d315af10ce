"""What the benchmark reads of the processes it measures (bench/run.py): a process's CPU time
(its process CPU clock), the supervisor's processes and their counters, PSS, and the idle
supervisor's CPU and memory with idle clients connected."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import psutil


def cpu_seconds(pid: int) -> float:
    """Another process's CPU time, all threads (those already gone too), ns resolution: its
    process CPU clock (the clockid clock_getcpuclockid(3) gives: CPUCLOCK_SCHED of the
    process). Readable while the process is a zombie (an exited relay not yet reaped)."""
    try:
        return time.clock_gettime_ns(((~pid) << 3) | 2) / 1e9
    except OSError:  # not Linux: the 10 ms ticks
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)


def _server_procs(adapter: Any) -> list[psutil.Process]:
    """The server processes of a peer (redis-server, the relay's socats), if it names them."""
    if hasattr(adapter, "server_pids"):
        pids = adapter.server_pids()
    elif hasattr(adapter, "server_pid"):
        pids = [adapter.server_pid()]
    else:
        return []
    return [psutil.Process(pid) for pid in pids if pid]


def _counters(procs: list[psutil.Process]) -> dict[str, Any]:
    """CPU seconds, voluntary context switches of all threads and read/write calls, summed."""
    out: dict[str, Any] = {"cpu": 0.0, "wakeups": 0, "syscr": 0, "syscw": 0}
    for pr in procs:
        out["cpu"] += cpu_seconds(pr.pid)
        try:
            out["wakeups"] += sum(_thread_switches(pr.pid))
            io = dict(line.split(": ") for line in Path(f"/proc/{pr.pid}/io").read_text().splitlines())
            out["syscr"] += int(io["syscr"])
            out["syscw"] += int(io["syscw"])
        except (OSError, KeyError, ValueError):  # not Linux, or not ours to read
            out["wakeups"] = out["syscr"] = out["syscw"] = None
            break
    return out


def _thread_switches(pid: int) -> list[int]:
    """voluntary_ctxt_switches of each thread of a process (the process's own line is its main
    thread's only). A thread that ends between two readings takes its count with it, so the
    wake-up counts are a guide; the CPU figures (the process's clock) include ended threads."""
    out = []
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                out.append(int(line.split()[1]))
    return out


# --- idle ----------------------------------------------------------------------------------------
def _idle_clients(sock: str, topic: str, stop: Any) -> None:
    import threading

    from edgebus import Admin, Consumer, TopicPartition

    admins = [Admin(socket=sock, transport="shm") for _ in range(5)]
    for a in admins:
        a.list_topics()

    def consume() -> None:
        # An idle consumer application sits in poll(): one long-poll fetch per
        # fetch_max_wait_ms (500 ms, the default) that the supervisor answers empty.
        c = Consumer(socket=sock, transport="shm")
        c.assign([TopicPartition(topic, 0)])
        while not stop.is_set():
            c.poll(1000)

    threads = [threading.Thread(target=consume) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def idle_cpu(seconds: float) -> dict[str, Any]:
    """A fresh supervisor (no housekeeping left from the load runs) with 10 idle clients."""
    from edgebus.testing import EmbeddedBroker

    broker = EmbeddedBroker(log_level="WARNING").start()
    try:
        return _idle_cpu(broker, seconds)
    finally:
        broker.stop()
        broker.cleanup()


def _idle_cpu(broker: Any, seconds: float) -> dict[str, Any]:
    from edgebus import Admin

    time.sleep(1.0)  # started, recovered, nothing connected yet: issue 16's "idle RSS"
    rss_alone = psutil.Process(broker.pid).memory_info().rss
    pss_alone = _pss(broker.pid)
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic("bench-idle", 1)
    mpc = mp.get_context("fork")
    stop = mpc.Event()
    pr = mpc.Process(target=_idle_clients, args=(broker.socket, "bench-idle", stop), daemon=True)
    pr.start()
    time.sleep(1.0)  # connected, past every spin window
    sup = psutil.Process(broker.pid)
    c0 = sup.cpu_times()
    t0 = time.monotonic()
    time.sleep(seconds)
    c1 = sup.cpu_times()
    wall = time.monotonic() - t0
    # Memory with the ten clients still connected (read after they left, it was not).
    rss, pss = sup.memory_info().rss, _pss(broker.pid)
    stop.set()
    pr.join(10)
    if pr.is_alive():
        pr.kill()
    cpu = (c1.user + c1.system) - (c0.user + c0.system)
    return {"clients": 10, "seconds": round(wall, 1), "supervisor_cpu_s": round(cpu, 3),
            "supervisor_rss_mb": round(rss / 2**20, 1),
            "supervisor_rss_mb_no_clients": round(rss_alone / 2**20, 1),
            # PSS divides shared pages (libpython, libc, ring pages) among the processes that
            # map them: this process's own cost (bench/rss.py says which part is what).
            "supervisor_pss_mb": pss, "supervisor_pss_mb_no_clients": pss_alone,
            "supervisor_cpu_percent": round(100 * cpu / wall, 3)}


def _pss(pid: int) -> float | None:
    try:
        return round(psutil.Process(pid).memory_full_info().pss / 2**20, 1)
    except (psutil.Error, AttributeError):  # smaps unreadable, or not Linux
        return None
