"""Test-only hooks, disabled by default: enabled by EDGEBUS_TEST_HOOKS=1 in the environment.

- SIGUSR2 blocks the event loop for EDGEBUS_TEST_BLOCK_S seconds (default 3), the way a hung
  loop would: the handler runs on the loop's own thread (Python runs signal handlers in the main
  thread), so no request is served and no WATCHDOG=1 is sent meanwhile. tests/service/ uses it to
  show that systemd's watchdog would fire; the block's start and end are sent to NOTIFY_SOCKET
  as STATUS= lines, so that the test places the pings by order, not by time.
- EDGEBUS_TEST_REPEAT_WINDOW_S shortens logrepeat.py's window (600 s), so that a test sees a
  held-back count logged when the window ends.
- SIGUSR1 writes the names of the modules the supervisor has imported (sys.modules), one a line,
  to the file EDGEBUS_TEST_MODULES_FILE names (written whole, then renamed into place):
  tests/server/test_idle_memory.py checks what an idle supervisor has not loaded (issue 16).

Never set EDGEBUS_TEST_HOOKS in production: anyone allowed to signal the supervisor could stall
it. Without the variable SIGUSR2 keeps its default action.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

log = logging.getLogger("edgebus.testhooks")

ENV_ENABLE = "EDGEBUS_TEST_HOOKS"
ENV_BLOCK_S = "EDGEBUS_TEST_BLOCK_S"
ENV_MODULES_FILE = "EDGEBUS_TEST_MODULES_FILE"
DEFAULT_BLOCK_S = 3.0


def install(environ: Any = None) -> bool:
    """Install the hooks if the environment asks for them; True when installed."""
    env = os.environ if environ is None else environ
    if env.get(ENV_ENABLE) != "1":
        return False
    try:
        seconds = float(env.get(ENV_BLOCK_S) or DEFAULT_BLOCK_S)
    except ValueError:
        seconds = DEFAULT_BLOCK_S

    def block(signum: int, frame: Any) -> None:
        log.warning("test hook: blocking the event loop for %.1f s (SIGUSR2)", seconds)
        # The block's start and end as STATUS= lines, sent from the loop's thread as WATCHDOG=1
        # is: a test reads from their order alone that no ping came while the loop was blocked,
        # where times taken on a loaded machine would blur the edges (tests/service/test_notify).
        _notify("STATUS=test hook: blocking the event loop")
        time.sleep(seconds)
        _notify("STATUS=test hook: the event loop runs again")
        log.warning("test hook: the event loop runs again")

    signal.signal(signal.SIGUSR2, block)
    window = env.get("EDGEBUS_TEST_REPEAT_WINDOW_S")
    if window:
        from edgebus.server import logrepeat

        logrepeat.set_window(float(window))
    modules_file = env.get(ENV_MODULES_FILE)
    if modules_file:
        def dump_modules(signum: int, frame: Any) -> None:
            import sys

            tmp = f"{modules_file}.tmp"
            with open(tmp, "w") as f:
                # A None entry is an import refused on purpose (server/slim.py): not imported.
                f.write("".join(f"{name}\n" for name, m in sorted(sys.modules.items())
                                if m is not None))
            os.replace(tmp, modules_file)

        signal.signal(signal.SIGUSR1, dump_modules)
    log.warning("test hooks are enabled (%s=1): SIGUSR2 blocks the event loop for %.1f s; "
                "never set this in production", ENV_ENABLE, seconds)
    return True


def _notify(line: str) -> None:
    """One line to NOTIFY_SOCKET, if set (sdnotify sends nothing without it)."""
    import sdnotify

    sdnotify.SystemdNotifier().notify(line)
