"""Claiming the supervisor's socket path: whose directory it is, and whether someone serves it.

Two ways to lose the socket, both seen in issue 14:

- **Squatting.** The default per-user directory `/tmp/edgebus-<uid>` can be created first by
  another local user (mode 0777), who then removes the socket and binds their own: the victim's
  clients talk to the impostor. So the supervisor serves only from a directory that it (or root)
  owns and that nobody else may write (a sticky directory such as /tmp itself is accepted: others
  cannot remove or rename what is ours in it), and creates a missing one itself, 0700 plus the
  search bits its `socket_mode` grants. Clients check the peer too (edgebus/peercred.py).
- **Takeover.** A second supervisor (another data directory, the same socket) used to delete the
  live socket and bind its own, and to remove it again at exit. Now a socket that answers a
  connect is never replaced: the second supervisor refuses and names the process serving it
  (SO_PEERCRED). Only a socket nobody answers on (left by a killed supervisor) is removed. A
  lock file beside the socket (`<socket>.lock`, flock) makes probe-remove-bind one step between
  supervisors of this version; and at exit the socket is removed only if the path still holds
  the very socket this supervisor bound (same device and inode).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
from pathlib import Path

from edgebus.errors import SocketDirError, SocketInUseError
from edgebus.peercred import describe_process, peer_cred, user_name

LOCK_SUFFIX = ".lock"
# A live supervisor accepts at once (its backlog is 128); one whose backlog is full is live too:
# a connect that neither succeeds nor is refused within this time counts as "someone serves it".
PROBE_TIMEOUT_S = 2.0
LISTEN_BACKLOG = 128


def dir_mode_for(socket_mode: int) -> int:
    """0700, plus search (x) for group/others when socket_mode lets them connect: enough to
    reach the socket, never to add, remove or list entries."""
    mode = 0o700
    if socket_mode & 0o060:
        mode |= 0o010
    if socket_mode & 0o006:
        mode |= 0o001
    return mode


def check_dir(d: Path) -> None:
    """SocketDirError unless `d` is a directory owned by this user or root that no one else may
    write (sticky directories excepted). A symbolic link must itself be ours or root's."""
    euid = os.geteuid()
    trusted = (euid, 0)
    st = os.lstat(d)
    if stat.S_ISLNK(st.st_mode):
        if st.st_uid not in trusted:
            raise SocketDirError(f"socket directory {d} is a symbolic link owned by "
                                 f"{user_name(st.st_uid)}, who could point it elsewhere")
        st = os.stat(d)
    if not stat.S_ISDIR(st.st_mode):
        raise SocketDirError(f"socket directory {d} is not a directory")
    if st.st_uid not in trusted:
        raise SocketDirError(f"socket directory {d} belongs to {user_name(st.st_uid)}, not to "
                             f"this user ({user_name(euid)}) or root: its owner could replace "
                             "the socket")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        who = " and ".join(w for w, bit in (("its group", 0o020), ("others", 0o002))
                           if st.st_mode & bit)
        raise SocketDirError(f"socket directory {d} is writable by {who} (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}): they could replace the socket")


def ensure_dir(d: Path, socket_mode: int) -> None:
    """Create the socket's directory if missing (dir_mode_for), then check_dir it. A directory
    someone else created meanwhile is checked like any existing one."""
    if not os.path.lexists(d):
        d.parent.mkdir(parents=True, exist_ok=True)  # ancestors: as the user's umask says
        mode = dir_mode_for(socket_mode)
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, mode)
            os.chmod(d, mode)  # exactly this mode, whatever the umask
    check_dir(d)


def probe(path: Path) -> tuple[int, int] | None:
    """(pid, uid) of the process serving the socket at `path` (a connect succeeded or did not
    finish in time), or None when nobody answers (no file, or a socket left by a dead process)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(PROBE_TIMEOUT_S)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        except (TimeoutError, BlockingIOError):
            return (-1, -1)  # bound and listening, with a full backlog: live
        except OSError as e:
            if e.errno == errno.EAGAIN:
                return (-1, -1)
            raise
        try:
            pid, uid, _ = peer_cred(s)
        except OSError:
            return (-1, -1)
        return pid, uid


def _in_use(path: Path, who: tuple[int, int]) -> SocketInUseError:
    pid, uid = who
    if pid > 0:
        name = f"{describe_process(pid)}, user {user_name(uid)}"
    else:
        name = "a process the kernel did not name (its backlog is full)"
    return SocketInUseError(f"socket {path} is served by another process: {name}; a live "
                            "socket is never taken over")


class SocketClaim:
    """The socket path for one supervisor: `acquire` (before recovery, so a second supervisor
    fails at once), `bind` (after recovery), `release` (at exit)."""

    def __init__(self, path: Path, mode: int = 0o660) -> None:
        self.path = Path(path)
        self.mode = mode
        self.lock_path = self.path.with_name(self.path.name + LOCK_SUFFIX)
        self._lock_fd: int | None = None
        self._ours: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket we bound

    @property
    def acquired(self) -> bool:
        return self._lock_fd is not None

    def acquire(self) -> None:
        path = self.path
        # A live socket is named first, whatever its directory (the most useful message for
        # `sudo edgebus serve` beside the system service).
        if os.path.lexists(path) and (who := probe(path)) is not None:
            raise _in_use(path, who)
        ensure_dir(path.parent, self.mode)
        self._lock()
        try:
            if (who := probe(path)) is not None:  # an older supervisor that takes no lock
                raise _in_use(path, who)
            if os.path.lexists(path):
                if not stat.S_ISSOCK(os.lstat(path).st_mode):
                    raise SocketInUseError(f"{path} exists and is not a socket; it is not "
                                           "removed: move it away or choose another `socket:`")
                # Nobody answers: a socket left by a supervisor that was killed.
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        except BaseException:
            self._unlock()
            raise

    def bind(self) -> socket.socket:
        """The listening socket at the path, `mode` as configured."""
        if not self.acquired:
            self.acquire()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o777 & ~self.mode)
        try:
            s.bind(str(self.path))
        except OSError as e:
            s.close()
            if e.errno == errno.EADDRINUSE and (who := probe(self.path)) is not None:
                raise _in_use(self.path, who) from None
            raise
        finally:
            os.umask(old)
        st = os.lstat(self.path)
        self._ours = (st.st_dev, st.st_ino)
        os.chmod(self.path, self.mode)
        s.listen(LISTEN_BACKLOG)
        return s

    def release(self) -> None:
        """Remove the socket if the path still holds ours, then drop the lock (its file stays:
        unlinking a lock file races with a process about to lock it)."""
        if self._ours is not None:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._ours:
                    self.path.unlink()
            self._ours = None
        self._unlock()

    def _lock(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.lock_path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            who = probe(self.path)
            if who is not None:
                raise _in_use(self.path, who) from None
            raise SocketInUseError(f"socket {self.path} is being claimed by another supervisor "
                                   f"(it holds {self.lock_path}) that does not serve it yet, "
                                   "probably still recovering its log") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)
