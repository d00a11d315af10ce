"""The teapot demo in one command (from the repository root):

    python3 examples/teapot/demo.py

It starts, in a temporary directory and on a free port, everything the demo needs: Mosquitto with
its own config file, an edgebus supervisor, the MQTT bridge (bridge.yaml), the boil detector
(boil_detector.py) and a simulated teapot (teapot.py). The teapot heats up and publishes its
temperature over MQTT; the bridge lands the readings in the edgebus topic teapot.temperature; the
detector sees the boil and produces "off" to teapot.commands; the bridge publishes it to
kitchen/teapot/pot-1/command; the teapot switches off and cools down. Then it prints a summary and
stops everything. Exit status 0 when the teapot was switched off.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# What the demo and its children import (edgebus's dependencies and the bridge's MQTT client).
NEEDED = {"yaml": "pyyaml", "paho": "paho-mqtt", "sdnotify": "sdnotify",
          "prometheus_client": "prometheus-client", "cffi": "cffi"}
_HANDED_OVER = "EDGEBUS_DEMO_HANDED_OVER"


def ensure_interpreter() -> None:
    """Children run with this interpreter, so it must have edgebus's dependencies. A python3
    without them (no activated venv) hands over at once to the checkout's .venv, if there is one,
    or says what to do; never a child failing later on an import."""
    missing = [pkg for mod, pkg in NEEDED.items() if importlib.util.find_spec(mod) is None]
    if not missing:
        return
    venv_python = REPO / ".venv" / "bin" / "python"
    if venv_python.exists() and not os.environ.get(_HANDED_OVER):
        print(f"demo: {sys.executable} lacks {', '.join(missing)}; running with {venv_python}",
              file=sys.stderr, flush=True)
        os.environ[_HANDED_OVER] = "1"  # once: a broken .venv gets the message below
        os.execv(venv_python, [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])
    raise SystemExit(
        f"demo: this Python ({sys.executable}) lacks {', '.join(missing)}, which edgebus needs.\n"
        f"  Set up the checkout once:  {REPO}/scripts/quickstart setup\n"
        f"  then run:                  {REPO}/.venv/bin/python examples/teapot/demo.py")


ensure_interpreter()
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import yaml  # noqa: E402  (after the interpreter check: it may be missing)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Children with their output prefixed; all stopped (SIGTERM) at the end. `check` raises as
    soon as a child has died that should still run (or any child failed), with its last lines."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen[str], tuple[int, ...]]] = []
        self.tails: dict[str, collections.deque[str]] = {}

    def start(self, name: str, cmd: list[str], quiet: bool = False,
              ends_with: tuple[int, ...] = ()) -> subprocess.Popen[str]:
        """ends_with: the exit statuses with which the child may end by itself (no failure)."""
        p = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, bufsize=1)
        self.procs.append((name, p, ends_with))
        tail = self.tails[name] = collections.deque(maxlen=10)

        def pump() -> None:
            assert p.stdout is not None
            for line in p.stdout:
                tail.append(line.rstrip())
                if not quiet or "ERROR" in line or "Error" in line:
                    print(f"[{name:9}] {line.rstrip()}", flush=True)

        threading.Thread(target=pump, daemon=True).start()
        return p

    def check(self) -> None:
        for name, p, ends_with in self.procs:
            code = p.poll()
            if code is None or code in ends_with:
                continue
            time.sleep(0.2)  # its last lines reach the pump
            last = "\n".join(f"    {line}" for line in self.tails[name]) or "    (no output)"
            raise SystemExit(f"demo: {name} exited with status {code}; its last lines:\n{last}")

    def stop_all(self) -> None:
        """Last started, first stopped: the bridge finishes before the supervisor goes."""
        for _, p, _ in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_until(pred: Any, timeout: float, what: str, procs: Processes) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        procs.check()  # a child that died is reported now, not after the timeout
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(0.05)


def main() -> int:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(mosquitto):
        print("demo: mosquitto is not installed (sudo apt-get install mosquitto)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="teapot-demo-"))
    sock_dir = Path(tempfile.mkdtemp(prefix="tp-", dir="/tmp"))  # Unix socket paths are short
    sock = str(sock_dir / "edgebus.sock")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "EDGEBUS_SOCKET": sock, "PYTHONUNBUFFERED": "1"}
    procs = Processes(env)
    edgebus = [sys.executable, "-m", "edgebus.cli.main"]
    try:
        # 1. Mosquitto, with its own config file on a free port.
        port = free_port()
        conf = work / "mosquitto.conf"
        lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false",
                 "max_queued_messages 0", "log_dest stderr", "log_type error", "log_type warning"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to the 'mosquitto' user
        conf.write_text("\n".join(lines) + "\n")
        procs.start("mosquitto", [mosquitto, "-c", str(conf)], quiet=True)
        wait_until(lambda: _connectable(port), 10, "Mosquitto", procs)
        print(f"demo: Mosquitto on 127.0.0.1:{port}", flush=True)

        # 2. The edgebus supervisor.
        procs.start("edgebus", [*edgebus, "serve", "--data-dir", str(work / "data"),
                                "--socket", sock], quiet=True)
        wait_until(lambda: _unix_connectable(sock), 30, "the edgebus supervisor", procs)
        print(f"demo: edgebus supervisor on {sock}", flush=True)

        # 3. The bridge, with bridge.yaml pointed at this Mosquitto and this supervisor.
        cfg = yaml.safe_load((HERE / "bridge.yaml").read_text())
        cfg["mqtt"]["port"] = port
        cfg["edgebus"]["socket"] = sock
        status_file = work / "bridge.status.json"
        cfg["status"]["file"] = str(status_file)
        bridge_conf = work / "bridge.yaml"
        bridge_conf.write_text(yaml.safe_dump(cfg, sort_keys=False))
        procs.start("bridge", [*edgebus, "bridge", "mqtt", "--config", str(bridge_conf)])
        wait_until(lambda: _bridge_ready(status_file), 30, "the bridge", procs)

        # 4. The application, then the teapot.
        detector = procs.start("detector", [sys.executable, str(HERE / "boil_detector.py"),
                                            "--socket", sock, "--max-commands", "1"],
                               ends_with=(0,))
        time.sleep(1.0)  # the detector joins its group
        procs.check()
        teapot = procs.start("teapot", [sys.executable, str(HERE / "teapot.py"), "--port",
                                        str(port), "--id", "pot-1", "--interval-ms", "150",
                                        "--seconds", "40"], ends_with=(0, 1))  # 1: never off
        wait_until(lambda: teapot.poll() is not None, 60, "the teapot", procs)
        code = teapot.returncode
        wait_until(lambda: detector.poll() is not None, 10, "the detector", procs)
        time.sleep(1.5)  # the last readings reach edgebus and the status file
        procs.check()

        # 5. What happened, from edgebus's side.
        from edgebus import Consumer

        with Consumer("teapot.temperature", "teapot.commands", socket=sock,
                      auto_offset_reset="earliest") as c:
            records = []
            while batch := c.poll(timeout_ms=500):
                for recs in batch.values():
                    records.extend(recs)
        readings = [r for r in records if r.topic == "teapot.temperature"]
        commands = [r for r in records if r.topic == "teapot.commands"]
        status = subprocess.run([*edgebus, "bridge", "status", "--config", str(bridge_conf)],
                                env=env, capture_output=True, text=True)
        print("\ndemo: summary", flush=True)
        print(f"  teapot.temperature: {len(readings)} readings from pot-1 in edgebus")
        print(f"  teapot.commands:    {[(r.key.decode(), r.value.decode()) for r in commands]}")
        print(f"  {status.stdout.strip()}")
        if code == 0:
            print("demo: the teapot boiled, the detector said off, the teapot switched off. OK")
        else:
            print("demo: the teapot was never switched off", file=sys.stderr)
        return 0 if code == 0 and commands else 1
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sock_dir, ignore_errors=True)


def _connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def _unix_connectable(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def _bridge_ready(status_file: Path) -> bool:
    import json

    try:
        doc = json.loads(status_file.read_text())
    except (OSError, ValueError):
        return False
    return bool(doc["mqtt"]["connected"] and doc["gauges"]["edgebus_connected"])


if __name__ == "__main__":
    sys.exit(main())
