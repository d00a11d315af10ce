"""A second supervisor never steals a live socket (issue 14 item 2), with two real supervisors.

`edgebus serve --data-dir D2 --socket S` beside a supervisor serving S from D1 used to delete the
live socket and take it over, and removed it at exit: the first one was unreachable for good.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edgebus import Admin
from edgebus.testing import EmbeddedBroker

pytestmark = pytest.mark.integration


def serve(data_dir: Path, sock: str, timeout: float = 60,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "edgebus.cli.main", "serve", "--data-dir", str(data_dir),
           "--socket", sock]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **(env or {})})
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"the second supervisor kept running (it took the socket):\n{err}"
                             ) from None
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def inode(path: str) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_dev, st.st_ino


def test_a_second_supervisor_refuses_a_live_socket(make_broker, tmp_path: Path) -> None:
    first = make_broker().start()
    with Admin(socket=first.socket) as a:
        a.create_topic("kept")
    before = inode(first.socket)
    r = serve(tmp_path / "d2", first.socket)
    # EX_CONFIG, as for a wrong config file: systemd's RestartPreventExitStatus=78 keeps a unit
    # from restarting into the same refusal.
    assert r.returncode == 78, r.stderr
    assert f"socket {first.socket} is served by another process: pid {first.pid} (" in r.stderr
    assert "edgebus.cli.main serve" in r.stderr  # the other process, named from its command line
    assert "hint: stop the other supervisor first" in r.stderr
    assert not (tmp_path / "d2").exists()  # refused before recovering anything
    # The first supervisor keeps its socket (the same one) and serves.
    assert inode(first.socket) == before
    with Admin(socket=first.socket) as a:
        assert "kept" in a.list_topics()
    assert first.stop() == 0


def test_a_socket_nobody_answers_on_is_replaced(make_broker, tmp_path: Path) -> None:
    first = make_broker().start()
    first.kill9()  # leaves its socket file behind
    assert os.path.exists(first.socket)
    second = EmbeddedBroker(tmp_path / "second", config={"socket": first.socket})
    second.socket = first.socket  # what start() waits on
    try:
        second.start()
        with Admin(socket=first.socket) as a:
            a.create_topic("second")
        assert second.stop() == 0
    finally:
        second.kill9()


def test_a_socket_that_is_not_ours_is_not_removed_at_exit(make_broker) -> None:
    b = make_broker().start()
    # Someone (root, or the owner of the directory) moves the supervisor's socket away and puts
    # another in its place: the supervisor must not remove that one when it stops.
    os.rename(b.socket, b.socket + ".moved")
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(b.socket)
    replaced = inode(b.socket)
    try:
        assert b.stop() == 0
        assert os.path.exists(b.socket) and inode(b.socket) == replaced
    finally:
        other.close()


def test_a_second_supervisor_on_a_held_data_directory_exits_78(make_broker,
                                                               tmp_path: Path) -> None:
    """The same second supervisor with its own socket is refused by the data directory's lock:
    the same exit status, whichever of the two it meets first."""
    first = make_broker().start()
    r = serve(first.data_dir, str(tmp_path / "other.sock"))
    assert r.returncode == 78, r.stderr
    assert "another edgebus supervisor is using this data directory" in r.stderr
    with Admin(socket=first.socket) as a:
        a.list_topics()
    assert first.stop() == 0


def test_a_listener_port_held_by_another_process_exits_78(tmp_path: Path) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        r = serve(tmp_path / "d", str(tmp_path / "s.sock"),
                  env={"EDGEBUS_KAFKA_LISTENERS": f"127.0.0.1:{port}"})
    finally:
        taken.close()
    assert r.returncode == 78, r.stderr
    assert f"kafka.listeners: 127.0.0.1:{port} is already in use by another process" in r.stderr
    assert "$EDGEBUS_KAFKA_LISTENERS" in r.stderr  # the quickstart's supervisor has no file
    assert not (tmp_path / "s.sock").exists()  # the socket it bound is removed again
