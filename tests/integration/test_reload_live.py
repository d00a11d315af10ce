"""A reload applies `limits:`, the intervals of `log:` and `metrics.listen` to the running
supervisor (edgebus/server/reload_live.py), and a metrics address that cannot be had fails the
reload with nothing changed.

Real supervisor, real SIGHUP (the `edgebus reload` CLI, a real process), real connections and
real HTTP scrapes."""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgebus import Admin, Producer
from edgebus.errors import DiskFullError, TooManyConnectionsError
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol
from edgebus.testing import EmbeddedBroker, free_port, wait_for

pytestmark = pytest.mark.integration


def cli(socket_path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgebus.cli.main", *args, "--socket", socket_path],
                          capture_output=True, text=True, timeout=60)


def edit(cfg: Path, change: Any) -> None:
    doc = yaml.safe_load(cfg.read_text())
    change(doc)
    cfg.write_text(yaml.safe_dump(doc))


def reload(b: EmbeddedBroker, expect: int = 0) -> str:
    r = cli(b.socket, "reload")
    assert r.returncode == expect, r.stdout + r.stderr
    return r.stdout + r.stderr


def scrape(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().status
    finally:
        conn.close()


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def metrics_ports(b: EmbeddedBroker) -> list[int]:
    """Every address the endpoint was served on, in order (one log line each)."""
    return [int(p) for p in re.findall(r"metrics endpoint on http://127\.0\.0\.1:(\d+)/metrics",
                                       b.log())]


def test_a_reload_applies_the_connection_limits(make_broker: Any) -> None:
    b = make_broker().start()
    cfg = Path(b.config_path)
    held = [Admin(socket=b.socket, transport="socket") for _ in range(3)]
    try:
        for a in held:
            a.list_topics()
        edit(cfg, lambda d: d.update(limits={"max_connections": 3,
                                              "max_output_total_bytes": 32 * 1024 * 1024}))
        out = reload(b)  # 0: applied, nothing waits for a restart (was 3, "limits" pending)
        assert "limits" not in out, out
        assert "reload: limits: max_connections 256 -> 3" in b.log()
        with pytest.raises(TooManyConnectionsError, match=r"limits\.max_connections"):
            Admin(socket=b.socket, transport="socket").list_topics()
        assert held[0].status()["limits"]["max_output_total_bytes"] == 32 * 1024 * 1024
        held.pop().close()  # room for the reload's own connection
        edit(cfg, lambda d: d.update(limits={"max_connections": 4}))
        reload(b)
        with Admin(socket=b.socket, transport="socket") as a, \
                Admin(socket=b.socket, transport="socket") as a2:  # a fourth is let in again
            assert a.list_topics() is not None and a2.list_topics() is not None
    finally:
        for a in held:
            a.close()


def test_a_reload_shortens_the_retention_interval(make_broker: Any) -> None:
    # A month between retention passes: only the reloaded interval lets retention run here.
    b = make_broker({"log": {"retention_check_interval_ms": 2_000_000_000}}).start()
    with Admin(socket=b.socket) as a:
        a.create_topic("live-rt", 1, {"segment_bytes": 4096, "retention_ms": 300})
        with Producer(socket=b.socket, linger_ms=0, batch_size=1) as p:
            for i in range(30):
                p.send("live-rt", f"{i:06d}".encode() + b"x" * 1000)
        edit(Path(b.config_path), lambda d: d["log"].update(retention_check_interval_ms=100,
                                                           cleaner_io_bytes_per_s=65536))
        out = reload(b)
        assert "retention_check_interval_ms" not in out and "cleaner_io" not in out, out
        assert a.status()["cleaner"]["io_bytes_per_s"] == 65536
        wait_for(lambda: a.describe_topic("live-rt").partitions[0].log_start_offset == 30, 60,
                 "retention, at the reloaded interval, to remove every record")


def test_a_reload_moves_the_metrics_endpoint(make_broker: Any) -> None:
    first = free_port()
    b = make_broker({"metrics": {"listen": f"127.0.0.1:{first}"}}).start()
    cfg = Path(b.config_path)
    wait_for(lambda: metrics_ports(b) == [first], 20, "the metrics endpoint's line")
    assert scrape(first) == 200
    second = free_port()
    edit(cfg, lambda d: d["metrics"].update(listen=f"127.0.0.1:{second}"))
    out = reload(b)
    assert "metrics.listen" not in out, out
    assert metrics_ports(b) == [first, second]
    assert scrape(second) == 200
    assert refused(first), "the old metrics address still accepts connections"

    # A port that cannot be had: the reload fails, nothing in the file is applied, the endpoint
    # stays where it was.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        edit(cfg, lambda d: (d["metrics"].update(listen=f"127.0.0.1:{port}"),
                             d.update(limits={"max_connections": 1})))
        out = reload(b, expect=1)
        assert f"metrics.listen: cannot listen on 127.0.0.1:{port}" in out, out
        assert f"the endpoint stays on 127.0.0.1:{second}" in out, out
        assert scrape(second) == 200
        with Admin(socket=b.socket, transport="socket") as a, \
                Admin(socket=b.socket, transport="socket") as a2:  # max_connections 1 not applied
            assert a.status()["reload"]["last_error"].startswith("metrics.listen")
            assert a2.list_topics() is not None

    # null: no endpoint any more.
    edit(cfg, lambda d: (d.update(metrics={"listen": None}), d.pop("limits")))
    reload(b)
    assert refused(second), "metrics.listen: null left the endpoint open"


def test_a_reload_applies_the_disk_watermarks(make_broker: Any) -> None:
    b = make_broker().start()
    cfg = Path(b.config_path)
    with Admin(socket=b.socket) as a:
        a.create_topic("live-disk", 1)
    huge = 2**60  # more free space than any disk has: the disk counts as low at once
    edit(cfg, lambda d: d.update(disk={"low_watermark": huge, "high_watermark": huge}))
    out = reload(b)
    assert "disk.low_watermark" not in out, out
    with Producer(socket=b.socket) as p, pytest.raises(DiskFullError, match="low watermark"):
        p.send("live-disk", b"refused").get(10)
    edit(cfg, lambda d: d.pop("disk"))
    reload(b)
    with Producer(socket=b.socket) as p:
        assert p.send("live-disk", b"taken").get(10).offset == 0


def test_a_reload_raises_the_output_bound_of_a_connection_held_back(make_broker: Any) -> None:
    """A client that pipelines fetches and reads no answer is held back at the output bound
    (its further requests are not read); a reload that raises the bound lets the supervisor
    handle them at once, with no byte from that client to wake it."""
    mib = 1024 * 1024
    b = make_broker({"limits": {"max_output_buffer_bytes": 2 * mib}}).start()
    with Admin(socket=b.socket) as a:
        a.create_topic("live-out")
    with Producer(socket=b.socket) as p:
        for _ in range(8):
            p.send("live-out", b"x" * (256 * 1024))
        p.flush()
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(b.socket)
    try:
        req = M.FetchRequest(0, 0, mib, [M.FetchPartition("live-out", 0, 0, mib)])
        stuck.sendall(b"".join(ClientProtocol.encode_request(M.Api.FETCH, corr, req)
                               for corr in range(1, 17)))  # 16 answers of ~0.8 MiB

        def queued() -> int:
            with Admin(socket=b.socket, transport="socket") as a:
                return int(a.status()["limits"]["output_bytes"])

        wait_for(lambda: queued() >= 2 * mib, 30, "the answers up to the bound")
        assert queued() < 6 * mib  # held back: the bound, one answer more, what the kernel took
        edit(Path(b.config_path), lambda d: d.update(limits={"max_output_buffer_bytes": 64 * mib}))
        out = reload(b)
        assert "max_output_buffer_bytes" not in out, out
        wait_for(lambda: queued() >= 8 * mib, 30, "the requests held back to be answered")
    finally:
        stuck.close()


def test_a_metrics_endpoint_that_could_not_start_is_started_by_a_reload(make_broker: Any) -> None:
    """The address was taken at the start (logged; the supervisor serves all the same). A
    reload with the same address used to leave it down for good (only a changed address was
    bound); now every reload tries again, and status says meanwhile that it is down and why."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        b = make_broker({"metrics": {"listen": f"127.0.0.1:{port}"}}).start()
        # (logged after the socket listens: the start goes on to the endpoint then)
        wait_for(lambda: f"cannot serve metrics on 127.0.0.1:{port}" in b.log(), 30,
                 "the line saying the endpoint could not start")
        with Admin(socket=b.socket, transport="socket") as a:
            m = a.status()["metrics"]
        assert m["state"] == "down" and m["listen"] == f"127.0.0.1:{port}"
        assert "Address already in use" in m["error"] and m["error_at"] is not None
        text = cli(b.socket, "status").stdout
        assert re.search(rf"metrics:\s+DOWN: cannot listen on 127\.0\.0\.1:{port}: Address "
                         r"already in use", text), text

        # Still taken: the reload is applied all the same (the file is fine), the endpoint
        # stays down and says so.
        edit(Path(b.config_path), lambda d: d.update(limits={"max_connections": 100}))
        out = reload(b)
        assert "reload: limits: max_connections 256 -> 100" in b.log()
        assert f"metrics.listen 127.0.0.1:{port} still cannot be had" in b.log(), out
        with Admin(socket=b.socket, transport="socket") as a:
            st = a.status()
        assert st["metrics"]["state"] == "down" and st["reload"]["last_error"] is None

    # Free now: the next reload, with the same file, starts it.
    reload(b)
    assert scrape(port) == 200
    assert metrics_ports(b) == [port]
    with Admin(socket=b.socket, transport="socket") as a:
        m = a.status()["metrics"]
    assert m == {"listen": f"127.0.0.1:{port}", "state": "serving", "port": port, "error": None,
                 "error_at": None}
    assert re.search(rf"metrics:\s+http://127\.0\.0\.1:{port}/metrics",
                     cli(b.socket, "status").stdout)
    reload(b)  # and one more keeps it as it is
    assert scrape(port) == 200 and metrics_ports(b) == [port]
