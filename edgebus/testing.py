"""Test helpers shipped as public API: a real supervisor in a temporary directory.

    with EmbeddedBroker() as broker:
        p = Producer(socket=broker.socket)
        ...
        broker.kill9()      # SIGKILL, as a power cut is to the process (not to the disk)
        broker.restart()    # recovery runs, same data dir and socket

The supervisor is a separate process (`python -m edgebus.cli.main serve`), exactly as users run it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
# How long start() and restart() wait for a new supervisor to listen, unless told: 30 s, or
# $EDGEBUS_TEST_START_S where start-up is slow (scripts/arm64-check: under qemu on a loaded
# machine the imports alone took over 30 s).
START_TIMEOUT_S = float(os.environ.get("EDGEBUS_TEST_START_S") or 30.0)


def free_ports(n: int) -> list[int]:
    """n distinct loopback ports free right now: every socket stays bound until all are chosen
    (one at a time, the kernel may hand the same port out twice). Another process may still take
    one before the caller binds it: where the server can bind port 0 and say which port it got
    (`kafka_bootstrap`, `replica_address`, `http_address`), prefer that."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """One loopback port free right now (see free_ports for the race it leaves)."""
    return free_ports(1)[0]


def wait_for(cond: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """cond()'s first true value, polled every `interval` s; AssertionError naming `what` once
    `timeout` s have passed without one (a test waits for an outcome, it does not time it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class PipeLines:
    """The complete lines a child process has written to a pipe, read without blocking. (select()
    followed by a buffered readline() strands a second line that arrived with the first in
    Python's buffer, where select() no longer sees it: a test then waits for it in vain.)"""

    def __init__(self, pipe: Any) -> None:
        self.fd = pipe.fileno()
        os.set_blocking(self.fd, False)
        self.partial = b""

    def read(self) -> list[bytes]:
        """The lines (without newline, blank ones left out) completed since the last call."""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.partial += chunk
        *lines, self.partial = self.partial.split(b"\n")
        return [line for line in lines if line.strip()]


def scrape_metrics(port: int, host: str = "127.0.0.1") -> dict[str, float]:
    """The samples of a Prometheus endpoint (/metrics), keyed as written: `name` or
    `name{label="value",...}`."""
    import urllib.request

    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


class EmbeddedBroker:
    def __init__(self, path: str | os.PathLike[str] | None = None, config: dict[str, Any] | None = None,
                 log_level: str = "INFO", wrapper: Sequence[str] = ()) -> None:
        self._own_dir = path is None
        # A command the supervisor runs under, e.g. ["valgrind", "--tool=callgrind"]
        # (bench/acl_instructions.py); it must exec the supervisor in place, so that `pid` is
        # the supervisor's.
        self.wrapper = list(wrapper)
        self.root = Path(path) if path is not None else Path(tempfile.mkdtemp(prefix="edgebus-test-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.root / "data"
        # Unix socket paths are limited to 108 bytes; keep it short and unique.
        self.socket = str(Path(tempfile.mkdtemp(prefix="eb-", dir="/tmp")) / "s.sock")
        self.log_path = self.root / "supervisor.log"
        self.config_path = self.root / "edgebus.yaml"
        cfg: dict[str, Any] = {"data_dir": str(self.data_dir), "socket": self.socket,
                               "log_level": log_level}
        cfg.update(config or {})
        # The Kafka listener on a free port (never 9092: many test supervisors run at once);
        # kafka_bootstrap says which.
        kafka = dict(cfg.get("kafka") or {})
        kafka.setdefault("listeners", ["127.0.0.1:0"])
        cfg["kafka"] = kafka
        self._kafka_bootstrap: str | None = None
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S,
              env: dict[str, str] | None = None) -> EmbeddedBroker:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the supervisor is already running")
        self._kafka_bootstrap = None
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the child)
        cmd = [*self.wrapper, sys.executable, "-m", "edgebus.cli.main", "serve", "--config", str(self.config_path)]
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the supervisor exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(self.socket)
                return
            except OSError:
                time.sleep(0.02)
        raise TimeoutError(f"the supervisor did not listen within {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: a clean shutdown. Returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            self._close_log()
        self.proc = None
        return code

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_log()
        self.proc = None

    def restart(self, timeout: float = START_TIMEOUT_S) -> EmbeddedBroker:
        if self.proc is not None:
            self.stop()
        return self.start(timeout)

    @property
    def kafka_bootstrap(self) -> str:
        """"host:port" of the running supervisor's (first) Kafka listener, for a Kafka client's
        bootstrap.servers (from the status document: the port is chosen at start)."""
        if self._kafka_bootstrap is None:
            from edgebus.client.admin import Admin

            with Admin(socket=self.socket) as admin:
                kafka = admin.status().get("kafka")
            if not kafka:
                raise RuntimeError("the supervisor serves no Kafka listener (kafka.enabled: false?)")
            self._kafka_bootstrap = str(kafka["listeners"][0]["listen"])
        return self._kafka_bootstrap

    @property
    def replica_address(self) -> str:
        """"host:port" of the running supervisor's replica listener, from the status document
        (with `replica.listen: "127.0.0.1:0"` the port is chosen at start: no other process can
        take it between choosing and binding, as it can a port probed free beforehand)."""
        from edgebus.client.admin import Admin

        with Admin(socket=self.socket) as admin:
            replica = admin.status().get("replica")
        if not replica:
            raise RuntimeError("the supervisor serves no replica listener (no replica.listen)")
        return str(replica["listen"])

    @property
    def http_address(self) -> str:
        """"host:port" of the running supervisor's HTTP listener, from the status document (with
        `http.listen: "127.0.0.1:0"` the port is chosen at start, as for replica_address)."""
        from edgebus.client.admin import Admin

        with Admin(socket=self.socket) as admin:
            http = admin.status().get("http")
        if not http:
            raise RuntimeError("the supervisor serves no HTTP listener (http.enabled: false?)")
        return str(http["listen"])

    @property
    def http_port(self) -> int:
        """The port of http_address."""
        return int(self.http_address.rsplit(":", 1)[1])

    @property
    def metrics_port(self) -> int:
        """The port of the running supervisor's metrics endpoint (`metrics.listen`, port 0 being
        fine), from the last line it logs (a reload may move it): that may reach the log file a
        little after the socket answers, so this waits for it."""
        found = wait_for(lambda: re.findall(r"metrics endpoint on http://\S+:(\d+)/metrics", self.log()),
                         20, "the metrics endpoint's line in the supervisor's log")
        return int(found[-1])

    def pin_replica_port(self) -> str:
        """Write the port the replica listener got into the config, so a restart keeps the
        address peers were given. Returns "host:port"."""
        return self._pin_listen("replica", self.replica_address)

    def pin_http_port(self) -> str:
        """As pin_replica_port, for the HTTP listener. Returns "host:port"."""
        return self._pin_listen("http", self.http_address)

    def _pin_listen(self, section: str, address: str) -> str:
        cfg = yaml.safe_load(self.config_path.read_text())
        cfg[section]["listen"] = address
        self.config_path.write_text(yaml.safe_dump(cfg))
        return address

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def cleanup(self) -> None:
        self.kill9()
        shutil.rmtree(Path(self.socket).parent, ignore_errors=True)
        if self._own_dir:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EmbeddedBroker:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.stop()
        finally:
            self.cleanup()
