"""Real second (and third) local users for security tests: created with useradd for one test and
removed after it, and a way to run this checkout's Python as them.

Running as another user needs root (useradd, setpriv). The interpreter may live below a directory
other users cannot enter (pyenv under /root, 0700): then the child gets a private mount namespace
in which that directory is a tmpfs holding only a bind mount of the interpreter's tree, so the
other user runs the very same Python and venv, and nothing of the host changes.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# How long a test's child process (a client run as another user, the CLI) may take before it
# counts as hung: a guard against a hang, not a timing. Such a child needs 1-3 s of CPU (kio
# imports hypothesis, kafka-python's clients, edgebus's CLI), which on this 2-core machine at
# load 15 took 28 s of wall clock and at load 28 more than the 60 s bound this was (CI:
# test_kafka_groups' child timed out so once).
CHILD_BOUND_S = 300.0


def _needs() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create local users (useradd) and run processes as them"
    for tool in ("useradd", "userdel", "setpriv", "unshare"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


@dataclass
class LocalUser:
    name: str
    uid: int
    gid: int


def _blocked_ancestor(target: Path) -> tuple[Path, str] | None:
    """(A, C): the first directory A on the way to `target` that others cannot enter, and the
    name C of its entry on that way; None if others reach `target`."""
    parts = target.resolve().parts
    for i in range(1, len(parts)):
        d = Path(*parts[:i])
        if not os.stat(d).st_mode & 0o001:
            return d, parts[i]
    return None


class Users:
    def __init__(self) -> None:
        self.made: list[LocalUser] = []
        self.procs: list[subprocess.Popen[str]] = []
        self.mounts: list[Path] = []
        self.groups: list[str] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="ebsec-", dir="/tmp"))
        os.chmod(self.tmp, 0o755)

    def add(self, prefix: str) -> LocalUser:
        name = f"{prefix}{uuid.uuid4().hex[:6]}"
        r = subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell",
                            "/usr/sbin/nologin", name], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"useradd failed: {r.stderr.strip()}")
        pw = pwd.getpwnam(name)
        user = LocalUser(name, pw.pw_uid, pw.pw_gid)
        self.made.append(user)
        return user

    def dir_for(self, user: LocalUser, name: str) -> Path:
        """A directory below /tmp that `user` owns (0700)."""
        d = self.tmp / name
        d.mkdir(mode=0o700)
        os.chown(d, user.uid, user.gid)
        return d

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment: no EDGEBUS_* or XDG_RUNTIME_DIR, so default paths apply."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("EDGEBUS_") and k not in ("XDG_RUNTIME_DIR", "HOME")}
        env.update(PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1", HOME="/nonexistent",
                   **extra)
        return env

    def popen(self, user: LocalUser, argv: list[str], env: dict[str, str] | None = None,
              groups: tuple[int, ...] = (), **kw: Any) -> subprocess.Popen[str]:
        """Run `argv` as `user` (argv[0] "python" means this interpreter), with the
        supplementary `groups` (gids) and no others."""
        argv = [sys.executable if a == "python" else a for a in argv]
        extra = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
        drop = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", extra]
        blocked = _blocked_ancestor(Path(sys.base_prefix))
        if blocked is None:
            cmd = [*drop, *argv]
        else:
            a, c = blocked
            mnt = Path(tempfile.mkdtemp(prefix="ebsec-mnt-", dir="/tmp"))
            self.mounts.append(mnt)  # a mount point inside the child's namespace only
            script = ('set -e; mount --bind "$1/$2" "$3"; '
                      'mount -t tmpfs -o mode=0755,size=64k tmpfs "$1"; mkdir "$1/$2"; '
                      'mount --bind "$3" "$1/$2"; shift 3; exec "$@"')
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                   str(a), c, str(mnt), *drop, *argv]
        p = subprocess.Popen(cmd, env=env if env is not None else self.env(), cwd="/",
                             text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
        self.procs.append(p)
        return p

    def run(self, user: LocalUser, argv: list[str], timeout: float = CHILD_BOUND_S,
            env: dict[str, str] | None = None,
            groups: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
        p = self.popen(user, argv, env, groups)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise AssertionError(f"{argv} as {user.name} did not finish in {timeout} s:\n"
                                 f"{out}\n{err}") from None
        return subprocess.CompletedProcess(argv, p.returncode, out, err)

    def add_group(self, prefix: str) -> tuple[str, int]:
        """A new local group (removed after the test): (name, gid)."""
        import grp

        name = f"{prefix}{uuid.uuid4().hex[:6]}"
        r = subprocess.run(["groupadd", name], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"groupadd failed: {r.stderr.strip()}")
        self.groups.append(name)
        return name, grp.getgrnam(name).gr_gid

    def cleanup(self) -> None:
        for p in self.procs:  # processes a failed test left would keep userdel from working
            if p.poll() is None:
                p.kill()
                p.communicate()
        for u in self.made:
            subprocess.run(["userdel", u.name], capture_output=True)
        for g in self.groups:
            subprocess.run(["groupdel", g], capture_output=True)
        for m in self.mounts:
            shutil.rmtree(m, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def users() -> Iterator[Users]:
    why = _needs()
    if why is not None:
        pytest.skip(why)
    u = Users()
    try:
        yield u
    finally:
        u.cleanup()
