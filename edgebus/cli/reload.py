"""`edgebus reload`: ask the supervisor to read its config file again (SIGHUP), wait until it
has, and say what happened: applied, the settings that wait for a restart, or why the file did
not load (the running configuration is then kept). Exit 0 applied, 1 not applied, 3 applied with
settings that wait for a restart (a script can tell it must restart)."""

from __future__ import annotations

import argparse
import os
import signal
import socket as socketlib
import sys
import time
from typing import Any

from edgebus.cli.common import add_socket_option, socket_path
from edgebus.errors import EdgebusError, OperationTimeoutError

EXIT_PENDING_RESTART = 3
# How long to wait for the supervisor's loop to handle the signal (it reads one small file).
WAIT_S = 30.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "reload", help="reload the supervisor's config file and say what waits for a restart",
        description="Sends SIGHUP to the supervisor serving the socket (as `systemctl reload "
                    "edgebus` does) and waits for it to read its config file again. Prints what "
                    "was applied, each changed setting that only a restart applies (with its "
                    "running and its new value), or why the file did not load (the running "
                    "configuration is then kept). Exit status: 0 applied, 1 not applied, 3 "
                    "applied but some changed settings wait for a restart.")
    add_socket_option(p)
    p.set_defaults(func=run)


def _supervisor_pid(path: str) -> int:
    from edgebus.peercred import peer_cred  # reads EDGEBUS_* knobs on import (cli/acl.py)

    with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as s:
        s.connect(path)
        return peer_cred(s)[0]


def run(args: argparse.Namespace) -> int:
    from edgebus import Admin

    path = socket_path(args)
    with Admin(socket=path) as admin:
        if admin.status().get("reload") is None:
            raise EdgebusError("this supervisor does not report reloads (an older version): "
                               "send it SIGHUP (systemctl reload edgebus)")
        after, pid = sighup_and_wait(admin, path)
    return report(after, pid)


def sighup_and_wait(admin: Any, path: str) -> tuple[dict[str, Any], int]:
    """SIGHUP to the supervisor serving `path` (as the kernel names it; `admin` is connected to
    it), then its status's `reload` section once it has handled the signal, and its pid. Also
    `edgebus acl add|remove` (cli/acl.py)."""
    before = admin.status()["reload"]
    pid = _supervisor_pid(path)
    try:
        os.kill(pid, signal.SIGHUP)
    except PermissionError:
        raise EdgebusError(f"the supervisor (pid {pid}) runs as another user: "
                           "use systemctl reload edgebus (or sudo)") from None
    deadline = time.monotonic() + WAIT_S
    while True:
        after: dict[str, Any] = admin.status()["reload"]
        if after["attempts"] > before["attempts"]:
            return after, pid
        if time.monotonic() > deadline:
            raise OperationTimeoutError(f"the supervisor (pid {pid}) did not reload within "
                                        f"{WAIT_S:.0f} s")
        time.sleep(0.05)


def report(rl: dict[str, Any], pid: int) -> int:
    if rl["last_error"]:
        what = rl["config"] or "a reload"  # None: it runs without a config file
        print(f"edgebus: error: the supervisor (pid {pid}) did not apply {what}: "
              f"{rl['last_error']}; the running configuration is kept", file=sys.stderr)
        return 1
    print(f"reloaded {rl['config']} (supervisor pid {pid})")
    pending = rl["pending_restart"]
    if not pending:
        return 0
    print("changed settings that wait for a restart (systemctl restart edgebus):")
    for key, v in pending.items():
        print(f"  {key}: {v['running']} -> {v['file']}")
    return EXIT_PENDING_RESTART
