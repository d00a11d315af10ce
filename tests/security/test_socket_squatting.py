"""Socket directory squatting by another local user (issue 14 item 1), with real users.

The attack: a user's default socket directory is `/tmp/edgebus-<uid>`. Another local user creates
it first (0777), then removes the victim's socket and binds their own, and the victim's clients
send their requests to the impostor. Here a real attacker user does each step; the supervisor
must refuse the directory, and the victim's clients must refuse a socket served by the attacker
before sending a byte.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.conftest import LocalUser, Users

pytestmark = pytest.mark.integration

# The impostor: binds the victim's default socket path, then records how many bytes each
# connecting client sends before hanging up (or before 3 s pass).
IMPOSTOR = r"""
import os, socket, sys, time
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o777)
s.listen(16)
print("ready", flush=True)
s.settimeout(30)
while True:
    try:
        c, _ = s.accept()
    except TimeoutError:
        break
    c.settimeout(3)
    got = 0
    try:
        while (data := c.recv(65536)):
            got += len(data)
    except OSError:
        pass
    print(f"client sent {got} bytes", flush=True)
"""


@pytest.fixture
def victim_dir(users: Users) -> Iterator[tuple[LocalUser, LocalUser, Path]]:
    victim, attacker = users.add("ebvic"), users.add("ebatk")
    d = Path(f"/tmp/edgebus-{victim.uid}")  # the victim's default socket directory
    shutil.rmtree(d, ignore_errors=True)
    try:
        yield victim, attacker, d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def squat(users: Users, attacker: LocalUser, d: Path, mode: int = 0o777) -> None:
    r = users.run(attacker, ["python", "-c", f"import os; os.mkdir({str(d)!r}); "
                                             f"os.chmod({str(d)!r}, {mode})"])
    assert r.returncode == 0, r.stderr
    assert os.stat(d).st_uid == attacker.uid


def test_supervisor_refuses_a_squatted_socket_directory(users: Users, victim_dir) -> None:
    victim, attacker, d = victim_dir
    squat(users, attacker, d)
    data = users.dir_for(victim, "data")
    p = users.popen(victim, ["python", "-m", "edgebus.cli.main", "serve", "--data-dir", str(data)])
    try:
        _, err = p.communicate(timeout=60)
    except Exception:
        p.kill()
        _, err = p.communicate()
        raise AssertionError(f"the supervisor served from {d}, owned by {attacker.name}:\n{err}"
                             ) from None
    assert p.returncode == 78, err  # EX_CONFIG: systemd does not restart into it
    assert f"socket directory {d} belongs to {attacker.name} (uid {attacker.uid})" in err, err
    assert "hint: use a directory only you (or root) own" in err, err
    assert os.listdir(d) == []  # nothing was bound there
    assert not any(data.iterdir())  # refused before recovery touched the data directory


# 0777 as squatted; 0711 as the attacker may tighten it: others can still reach the socket.
@pytest.mark.parametrize("mode", [0o777, 0o711])
def test_clients_refuse_a_socket_served_by_another_user(users: Users, victim_dir,
                                                        mode: int) -> None:
    victim, attacker, d = victim_dir
    squat(users, attacker, d, mode)
    impostor = users.popen(attacker, ["python", "-c", IMPOSTOR, str(d / "edgebus.sock")])
    assert impostor.stdout is not None
    assert impostor.stdout.readline().strip() == "ready"
    # The CLI and the library, on the default socket path, as the victim.
    cli = users.run(victim, ["python", "-m", "edgebus.cli.main", "topics", "list"])
    lib = users.run(victim, ["python", "-c", (
        "import edgebus\n"
        "from edgebus.errors import UntrustedSocketError\n"
        "try:\n"
        "    edgebus.Producer(acks='written').send('t', b'secret').get(5)\n"
        "except UntrustedSocketError as e:\n"
        "    print('refused:', e)\n")])
    impostor.kill()
    out, _ = impostor.communicate()
    assert cli.returncode == 1, cli.stderr
    assert "refusing the socket" in cli.stderr and f"{attacker.name} (uid {attacker.uid})" in cli.stderr
    assert "EDGEBUS_SUPERVISOR_USER" in cli.stderr  # the hint
    assert lib.returncode == 0 and lib.stdout.startswith("refused:"), (lib.stdout, lib.stderr)
    sent = [line for line in out.splitlines() if line.startswith("client sent")]
    assert len(sent) >= 2, out  # both connected...
    assert set(sent) == {"client sent 0 bytes"}, out  # ...and sent the impostor nothing


def test_the_supervisors_own_directory_keeps_the_attacker_out(users: Users, victim_dir) -> None:
    victim, attacker, d = victim_dir
    data = users.dir_for(victim, "data")
    sup = users.popen(victim, ["python", "-m", "edgebus.cli.main", "serve", "--data-dir", str(data)])
    sock = d / "edgebus.sock"
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert sup.poll() is None, sup.communicate()
            assert time.monotonic() < deadline, "the supervisor did not listen"
            time.sleep(0.05)
        st = os.stat(d)
        assert st.st_uid == victim.uid
        # Created by the supervisor: 0700 plus search for the group its socket_mode (0660)
        # admits; writable by no one else.
        assert stat.S_IMODE(st.st_mode) == 0o710
        # The attacker can neither remove the socket nor put one beside it.
        r = users.run(attacker, ["python", "-c", (
            "import errno, os, socket, sys\n"
            "codes = []\n"
            "try:\n"
            f"    os.unlink({str(sock)!r})\n"
            "except OSError as e:\n"
            "    codes.append(e.errno)\n"
            "try:\n"
            f"    socket.socket(socket.AF_UNIX).bind({str(d / 'x.sock')!r})\n"
            "except OSError as e:\n"
            "    codes.append(e.errno)\n"
            "print(codes)\n")])
        assert r.stdout.strip() == f"[{errno.EACCES}, {errno.EACCES}]", (r.stdout, r.stderr)
        # The victim's own client is served.
        r = users.run(victim, ["python", "-m", "edgebus.cli.main", "topics", "create", "mine"])
        assert r.returncode == 0, r.stderr
    finally:
        sup.terminate()
        sup.communicate(timeout=60)
    assert sup.returncode == 0
    assert not sock.exists()  # its own socket, removed at a clean stop
