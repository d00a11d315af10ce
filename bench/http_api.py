"""The HTTP API and console: produce and SSE-consume throughput over HTTP, against the socket
client in the same run, and what the console costs the supervisor when idle.

    .venv/bin/python -m bench.http_api [--seconds 5] [--idle-seconds 30] [--no-browser]

Writes bench/results/http.json and http.md. Cases (each against a fresh supervisor):
- produce: one client process, HTTP/1.1 keep-alive (http.client), POST of 1 record and of 100
  records per request (JSON, 100-byte values); the socket Producer's send_batch as the peer.
- sse: a topic pre-filled with records, read by one SSE client from the start (the same fetch
  path a tailing browser uses), and a live tail while a socket producer writes.
- idle: the supervisor's RSS without and with the HTTP listener; its CPU over --idle-seconds
  with the console open in headless Chromium (overview polling, a live tail), or simulated
  (one SSE stream and a status poll every 5 s) without a browser.
Supervisor CPU is user+system of its process (psutil), per record.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgebus.testing import EmbeddedBroker, free_port  # noqa: E402

RESULTS = REPO / "bench" / "results"
TOPIC = "bench"
VALUE = "x" * 100


def start(http: bool = True) -> tuple[EmbeddedBroker, int]:
    port = free_port()
    cfg: dict[str, Any] = {"topics": [{"name": TOPIC, "segment_bytes": "256MiB"}],
                           "log_level": "WARNING"}
    if http:
        cfg["http"] = {"enabled": True, "listen": f"127.0.0.1:{port}"}
    b = EmbeddedBroker(Path(tempfile.mkdtemp(prefix="eb-bench-http-")), config=cfg).start()
    return b, port


def cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _post_loop(port: int, per_request: int, seconds: float, out: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"records": [{"value": VALUE} for _ in range(per_request)]}).encode()
    headers = {"Content-Type": "application/json"}
    n = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        conn.request("POST", f"/api/topics/{TOPIC}/records", body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        n += per_request
    out.put((n, time.monotonic() - t0))


def _socket_loop(sock: str, seconds: float, out: Any) -> None:
    from edgebus import Producer

    n = 0
    values = [VALUE.encode()] * 1000
    with Producer(socket=sock, transport="socket") as p:
        t0 = time.monotonic()
        end = t0 + seconds
        while time.monotonic() < end:
            p.send_batch(TOPIC, values)
            n += 1000
        p.flush()
    out.put((n, time.monotonic() - t0))


def run_proc(target: Any, *args: Any) -> tuple[int, float]:
    q: Any = mp.Queue()
    p = mp.Process(target=target, args=(*args, q))
    p.start()
    res = q.get(timeout=600)
    p.join()
    return res


def produce_case(name: str, target: Any, args_of: Any, seconds: float) -> dict[str, Any]:
    b, port = start()
    try:
        pid = b.pid
        assert pid is not None
        c0 = cpu(pid)
        n, dt = run_proc(target, *args_of(b, port), seconds)
        c1 = cpu(pid)
    finally:
        b.stop()
        b.cleanup()
    return {"case": name, "records": n, "seconds": round(dt, 2), "records_per_s": round(n / dt),
            "supervisor_cpu_us_per_record": round(1e6 * (c1 - c0) / n, 2)}


def fill(sock: str, n: int) -> None:
    from edgebus import Producer

    with Producer(socket=sock) as p:
        for _ in range(n // 1000):
            p.send_batch(TOPIC, [VALUE.encode()] * 1000)
        p.flush()


def sse_read(port: int, n: int, path: str) -> float:
    """Seconds to read n record events from the stream."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", path, headers={"Accept": "text/event-stream"})
    r = conn.getresponse()
    got = 0
    t0 = time.monotonic()
    while got < n:
        line = r.readline()
        if not line:
            raise RuntimeError("the stream ended")
        if line.startswith(b"event: record"):
            got += 1
    dt = time.monotonic() - t0
    conn.close()
    return dt


def sse_cases(n: int) -> list[dict[str, Any]]:
    out = []
    b, port = start()
    try:
        fill(b.socket, n)
        pid = b.pid
        assert pid is not None
        c0 = cpu(pid)
        dt = sse_read(port, n, f"/api/topics/{TOPIC}/tail?from=earliest")
        c1 = cpu(pid)
        out.append({"case": "sse catch-up (records already in the log)", "records": n,
                    "seconds": round(dt, 2), "records_per_s": round(n / dt),
                    "supervisor_cpu_us_per_record": round(1e6 * (c1 - c0) / n, 2)})
        # live: a socket producer writes while the stream tails
        live = n // 2
        writer = mp.Process(target=fill, args=(b.socket, live))
        c0 = cpu(pid)
        t0 = time.monotonic()
        writer.start()
        sse_read(port, live, f"/api/topics/{TOPIC}/tail")
        dt = time.monotonic() - t0
        writer.join()
        c1 = cpu(pid)
        out.append({"case": "sse live tail (socket producer writing)", "records": live,
                    "seconds": round(dt, 2), "records_per_s": round(live / dt),
                    "supervisor_cpu_us_per_record": round(1e6 * (c1 - c0) / live, 2),
                    "note": "supervisor CPU includes the producer's appends"})
    finally:
        b.stop()
        b.cleanup()
    return out


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def idle_case(seconds: float, browser: bool) -> dict[str, Any]:
    res: dict[str, Any] = {}
    b0, _ = start(http=False)
    time.sleep(1.0)
    assert b0.pid is not None
    res["rss_without_http_bytes"] = rss(b0.pid)
    b0.stop()
    b0.cleanup()
    b, port = start()
    try:
        assert b.pid is not None
        time.sleep(1.0)
        res["rss_with_http_bytes"] = rss(b.pid)
        # idle with nobody connected
        c0, t0 = cpu(b.pid), time.monotonic()
        time.sleep(min(10.0, seconds))
        res["cpu_percent_listener_only"] = round(100 * (cpu(b.pid) - c0) / (time.monotonic() - t0), 3)
        fill(b.socket, 1000)
        how = "simulated"
        drv: Any = None
        if browser:
            try:
                from tests.web.cdp import Browser, chromium_path

                if chromium_path() is not None:
                    drv = Browser()
                    drv.open(f"http://127.0.0.1:{port}/#tail/{TOPIC}", 390, 844, mobile=True)
                    how = "headless Chromium, tail view (polls /api/status every 5 s, one live tail)"
            except Exception as e:  # fall back to the simulation
                print(f"bench: no browser ({e}); simulating the console", file=sys.stderr)
        sim = None
        if drv is None:
            sim = http.client.HTTPConnection("127.0.0.1", port)
            sim.request("GET", f"/api/topics/{TOPIC}/tail", headers={"Accept": "text/event-stream"})
            sim.getresponse()
        time.sleep(3.0)  # the page settles
        c0, t0 = cpu(b.pid), time.monotonic()
        poll = http.client.HTTPConnection("127.0.0.1", port)
        while time.monotonic() - t0 < seconds:
            if sim is not None:
                poll.request("GET", "/api/status")
                poll.getresponse().read()
            time.sleep(5.0)
        res["cpu_percent_console_open"] = round(100 * (cpu(b.pid) - c0) / (time.monotonic() - t0), 3)
        res["rss_console_open_bytes"] = rss(b.pid)
        res["console"] = how
        res["idle_seconds"] = seconds
        if drv is not None:
            drv.close()
        if sim is not None:
            sim.close()
    finally:
        b.stop()
        b.cleanup()
    # The listener alone is what an idle supervisor with http.enabled imports; h11 and the API's
    # modules come at the first HTTP connection (listeners/http.py), so they are imported here
    # by name, and the run fails if h11 did not come with them (the row would measure nothing).
    code = ("import sys, psutil\n"
            "import edgebus.server.supervisor\n"
            "a = psutil.Process().memory_info().rss\n"
            "import edgebus.server.listeners.http, edgebus.server.http.auth\n"
            "b = psutil.Process().memory_info().rss\n"
            "import edgebus.server.listeners.http_connection, edgebus.server.http.api\n"
            "assert 'h11' in sys.modules, 'h11 was not imported'\n"
            "print(b - a, psutil.Process().memory_info().rss - a)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         check=True)
    listener, with_h11 = (int(x) for x in out.stdout.split())
    res["import_listener_bytes"] = listener
    res["import_h11_and_listener_bytes"] = with_h11
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="per produce case")
    ap.add_argument("--sse-records", type=int, default=100_000)
    ap.add_argument("--idle-seconds", type=float, default=30.0)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    load0 = os.getloadavg()
    produce = [
        produce_case("http POST, 1 record per request", _post_loop, lambda b, port: (port, 1), args.seconds),
        produce_case("http POST, 100 records per request", _post_loop, lambda b, port: (port, 100), args.seconds),
        produce_case("socket Producer.send_batch (peer)", _socket_loop, lambda b, port: (b.socket,), args.seconds),
        produce_case("http POST, 1000 records per request", _post_loop, lambda b, port: (port, 1000), args.seconds),
    ]
    sse = sse_cases(args.sse_records)
    idle = idle_case(args.idle_seconds, not args.no_browser)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    commit += " (with uncommitted changes)" if dirty else ""
    doc = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "load_before": load0, "load_after": os.getloadavg()}, "commit": commit,
           "produce": produce, "sse": sse, "idle": idle}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "http.json").write_text(json.dumps(doc, indent=2) + "\n")
    peer = next(r for r in produce if r["case"].startswith("socket"))["records_per_s"]
    lines = ["# HTTP API and console benchmark (`python -m bench.http_api`)", "",
             f"Commit {commit}; {os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
             f"{load0[0]:.1f} before, {os.getloadavg()[0]:.1f} after (other work moves every "
             "number: compare rows of this report, not reports).", "",
             "| case | records/s | vs socket send_batch | supervisor CPU us/record |", "|---|---|---|---|"]
    for r in produce + sse:
        lines.append(f"| {r['case']} | {r['records_per_s']:,} | {r['records_per_s'] / peer:.3f} | "
                     f"{r['supervisor_cpu_us_per_record']} |")
    mib = 1024 * 1024
    lines += ["", "| idle | |", "|---|---|",
              f"| supervisor RSS without / with the HTTP listener | {idle['rss_without_http_bytes'] / mib:.1f} / "
              f"{idle['rss_with_http_bytes'] / mib:.1f} MiB |",
              f"| importing the listener (all an idle supervisor with http.enabled loads) | "
              f"{idle['import_listener_bytes'] / 1024:.0f} KiB |",
              f"| importing h11 and the API too (at the first HTTP connection) | "
              f"{idle['import_h11_and_listener_bytes'] / 1024:.0f} KiB |",
              f"| supervisor CPU, listener idle, nobody connected | {idle['cpu_percent_listener_only']} % |",
              f"| supervisor CPU, console open ({idle['console']}), {idle['idle_seconds']:.0f} s | "
              f"{idle['cpu_percent_console_open']} % |",
              f"| supervisor RSS with the console open | {idle['rss_console_open_bytes'] / mib:.1f} MiB |"]
    (RESULTS / "http.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
