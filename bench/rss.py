"""What the idle supervisor holds in memory (issue 16: at most 20 MB idle, 25 MB with 10 clients).

    python -m bench.rss

Starts a supervisor as the benchmark does (edgebus.testing.EmbeddedBroker: the Kafka listener on
a free port, access control on, default settings), waits until it is idle, then connects the
benchmark's ten idle shm clients (5 Admin, 5 Consumers in poll(); bench/run.py) and measures
again; then lets them go and measures again (does the memory come back?). In between: after a
status request (`edgebus status`), and with the Kafka listener on after a Kafka client
(librdkafka: produce two records, consume them). Then the same with the Kafka listener off, and
a supervisor with the Prometheus endpoint on (`metrics.listen`): idle, after a status request,
after the first scrape and after ten more; and idle with one part of a user's config on at a
time (HTTP, a replica listener, access rules, metrics). For each point it reads /proc/PID/status and
smaps_rollup: RSS split into anonymous memory (the Python heap and objects: this process's own),
file-backed pages (libpython, libc, extension modules: shared with every other process that maps
the same files, so counted in full in each one's RSS) and shared memory (ring pages the
supervisor has touched, shared with the client at the other end), and PSS, which divides every
shared page among the processes that map it: the honest "how much does this process cost" figure
when several Python processes and the rings' peers share pages. The largest mappings are listed.
Writes bench/results/rss.json and rss.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
KB = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem", "Private_Clean", "Private_Dirty")


def memory(pid: int) -> dict[str, float]:
    """MB figures of a process from /proc (smaps_rollup: Linux 4.14+)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB" and parts[0].rstrip(":") in KB:
            out[parts[0].rstrip(":")] = int(parts[1]) / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("RssAnon", "RssFile", "RssShmem")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    out["Uss"] = out.pop("Private_Clean", 0.0) + out.pop("Private_Dirty", 0.0)
    return {k: round(v, 1) for k, v in out.items()}


def largest_mappings(pid: int, top: int = 8) -> list[tuple[str, float]]:
    """RSS per mapped file ("[anon]" for anonymous memory), largest first, MB."""
    by: dict[str, int] = {}
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and ":" not in head[0]:
            name = head[5] if len(head) >= 6 else "[anon]"
        elif head and head[0] == "Rss:":
            by[name] = by.get(name, 0) + int(head[1])
    return [(n, round(kb / 1024, 1)) for n, kb in sorted(by.items(), key=lambda x: -x[1])[:top]]


def _kafka_client(bootstrap: str, topic: str) -> None:
    """What a Kafka application does once: librdkafka produces two records and reads them back
    (this process holds librdkafka; the supervisor loads its Kafka protocol package)."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for i in range(2):
        p.produce(topic, value=b"v%d" % i, partition=0)
    if p.flush(30) != 0:
        raise RuntimeError("the Kafka producer's records were not acknowledged")
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-rss",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got, deadline = 0, time.monotonic() + 30
        while got < 2 and time.monotonic() < deadline:
            m = c.poll(0.5)
            got += m is not None and m.error() is None
        if got < 2:
            raise RuntimeError("the Kafka consumer did not read the two records back")
    finally:
        c.close()


def _scrape(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return len(r.read())


def measure(kafka: bool, settle_s: float, tree: str | None = None) -> dict[str, Any]:
    """Idle; after a status request; with ten idle shm clients; after they left; (Kafka listener
    on) after a Kafka client's produce and consume."""
    from bench.run import _idle_clients
    from edgebus import Admin
    from edgebus.testing import EmbeddedBroker

    broker = EmbeddedBroker(log_level="WARNING",
                            config=None if kafka else {"kafka": {"enabled": False}})
    broker.start(env={"PYTHONPATH": tree} if tree else None)  # --tree: another checkout's
    assert broker.pid is not None
    points: dict[str, Any] = {}
    try:
        time.sleep(settle_s)  # recovered and listening, nothing connected
        points["idle"] = memory(broker.pid)
        maps = largest_mappings(broker.pid)
        with Admin(socket=broker.socket, transport="socket") as a:
            a.create_topic("bench-idle", 1)
            a.status()  # what `edgebus status` asks
        time.sleep(settle_s)
        points["after_status"] = memory(broker.pid)
        ctx = mp.get_context("fork")
        stop = ctx.Event()
        clients = ctx.Process(target=_idle_clients, args=(broker.socket, "bench-idle", stop),
                              daemon=True)
        clients.start()
        time.sleep(settle_s + 1.0)  # connected, rings attached, consumers sitting in poll()
        points["ten_clients"] = memory(broker.pid)
        stop.set()
        clients.join(10)
        if clients.is_alive():
            clients.kill()
        time.sleep(settle_s)  # gone: connections closed, rings unmapped
        points["clients_left"] = memory(broker.pid)
        if kafka:
            _kafka_client(broker.kafka_bootstrap, "bench-idle")
            time.sleep(settle_s)
            points["after_kafka_client"] = memory(broker.pid)
    finally:
        broker.stop()
        broker.cleanup()
    return {"kafka_listener": kafka, "tree": tree or "this checkout", **points,
            "largest_mappings_idle": maps}


def measure_metrics(settle_s: float, tree: str | None = None) -> dict[str, Any]:
    """A supervisor with the Prometheus endpoint on (metrics.listen): idle, after a status
    request, after a scrape, after ten more scrapes."""
    from edgebus import Admin
    from edgebus.testing import EmbeddedBroker

    # INFO: the endpoint's port is read from the line it logs (EmbeddedBroker.metrics_port).
    broker = EmbeddedBroker(log_level="INFO", config={"metrics": {"listen": "127.0.0.1:0"}})
    broker.start(env={"PYTHONPATH": tree} if tree else None)
    assert broker.pid is not None
    points: dict[str, Any] = {}
    try:
        port = broker.metrics_port
        time.sleep(settle_s)
        points["idle"] = memory(broker.pid)
        with Admin(socket=broker.socket, transport="socket") as a:
            a.status()
        time.sleep(settle_s)
        points["after_status"] = memory(broker.pid)
        _scrape(port)
        time.sleep(settle_s)
        points["after_scrape"] = memory(broker.pid)
        for _ in range(10):
            _scrape(port)
        time.sleep(settle_s)
        points["after_11_scrapes"] = memory(broker.pid)
    finally:
        broker.stop()
        broker.cleanup()
    return {"metrics": True, "kafka_listener": True, "tree": tree or "this checkout", **points}


def measure_configs(settle_s: float, tree: str | None = None) -> dict[str, Any]:
    """Idle RSS with what a user's config turns on, one part at a time: the HTTP console and
    API, a replica listener (no TLS), access rules, the metrics endpoint."""
    from edgebus.testing import EmbeddedBroker

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tokens = Path(tmp) / "tokens.yaml"
        tokens.write_text("peer: " + "x" * 24 + "\n")
        tokens.chmod(0o600)
        configs: dict[str, dict[str, Any] | None] = {
            "defaults": None,
            "http": {"http": {"enabled": True, "listen": "127.0.0.1:0"}},
            "replica.listen": {"replica": {"listen": "127.0.0.1:0", "node": "n1",
                                           "tokens_file": str(tokens)}},
            "acl.rules": {"acl": {"enabled": True, "rules": [
                "allow group:root read topic:sensors.*", "allow uid:1000 write topic:t"]}},
            "metrics.listen": {"metrics": {"listen": "127.0.0.1:0"}},
        }
        for name, cfg in configs.items():
            broker = EmbeddedBroker(log_level="WARNING", config=cfg)
            broker.start(env={"PYTHONPATH": tree} if tree else None)
            assert broker.pid is not None
            try:
                time.sleep(settle_s)
                out[name] = memory(broker.pid)
            finally:
                broker.stop()
                broker.cleanup()
    return {"tree": tree or "this checkout", "configs": out}


POINTS = (("none", "idle"), ("after a status request", "after_status"),
          ("10 shm", "ten_clients"), ("10 shm, gone again", "clients_left"),
          ("after a Kafka client (produce, consume)", "after_kafka_client"),
          ("after a metrics scrape", "after_scrape"), ("after 11 scrapes", "after_11_scrapes"))


def render(report: dict[str, Any]) -> list[str]:
    cols = ("Rss", "Pss", "Uss", "RssAnon", "RssFile", "RssShmem")
    md = [f"# Idle supervisor memory (python -m bench.rss), {report['when']}", "",
          f"{report['machine']}; load average {report['loadavg']}. MB; goal (issue 16): RSS at "
          "most 20 idle, 25 with 10 clients.", "",
          "| supervisor | clients, or after | " + " | ".join(cols) + " |",
          "|---|---|" + "---|" * len(cols)]
    for r in report["runs"]:
        label = "Kafka listener on (default)" if r["kafka_listener"] else "Kafka listener off"
        if r.get("metrics"):
            label = "metrics endpoint on, Kafka listener on"
        if r.get("tree", "this checkout") != "this checkout":
            label += f", {r['tree']}"
        for what, key in POINTS:
            if key in r:
                md.append(f"| {label} | {what} | "
                          + " | ".join(str(r[key].get(c, "")) for c in cols) + " |")
    if report.get("configs"):
        md += ["", "Idle, with one part of a user's config on (MB):", "",
               "| config | " + " | ".join(f"RSS {c['tree']} | PSS {c['tree']}"
                                          for c in report["configs"]) + " |",
               "|---|" + "---|---|" * len(report["configs"])]
        for name in report["configs"][0]["configs"]:
            md.append(f"| {name} | " + " | ".join(
                f"{c['configs'][name]['Rss']} | {c['configs'][name]['Pss']}"
                for c in report["configs"]) + " |")
    md += ["", "Largest resident mappings of the idle supervisor (Kafka listener on), MB:", ""]
    md += [f"- {name}: {mb}" for name, mb in report["runs"][0]["largest_mappings_idle"]]
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.rss", description=__doc__.split("\n")[0])
    ap.add_argument("--settle", type=float, default=1.5, help="seconds to wait before measuring")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--tree", help="also measure another checkout's supervisor (PYTHONPATH=TREE, "
                                   "e.g. /work/main), alternated with this one's")
    args = ap.parse_args(argv)
    trees: list[str | None] = [None]
    if args.tree:
        trees.append(str(Path(args.tree).resolve()))
        # `python -m` puts the working directory first on the child's sys.path: start the
        # supervisors from elsewhere so that PYTHONPATH, not this checkout, gives TREE's edgebus.
        os.chdir(tempfile.gettempdir())
    runs = [measure(kafka, args.settle, tree) for kafka in (True, False) for tree in trees]
    runs += [measure_metrics(args.settle, tree) for tree in trees]
    configs = [measure_configs(args.settle, tree) for tree in trees]
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python "
                         f"{platform.python_version()}, Linux {platform.release()}",
              "loadavg": round(os.getloadavg()[0], 2), "runs": runs, "configs": configs}
    md = render(report)
    print("\n".join(md))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rss.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "rss.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
