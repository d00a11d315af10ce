"""Where a replicator leaves its status for `edgebus status` (docs/REPLICATION.md, "Watching it").

Each replicator process writes its /status document, with its pid and the time, to
`<directory of the supervisor's socket>/replicators/<node>-<pid>.json` every second, atomically
(a temporary file renamed over the old one), and removes it when it stops. `edgebus status`
reads every such file next to the socket it asks: the supervisor does not need to know its
replicators, and one killed with SIGKILL is shown as stale (its pid gone, or its file not
rewritten for STALE_S), never as up.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

WRITE_EVERY_S = 1.0
STALE_S = 10.0  # a file not rewritten for this long belongs to a replicator that is stuck or gone


def status_dir(socket: str | os.PathLike[str]) -> Path:
    return Path(socket).parent / "replicators"


def status_file(socket: str | os.PathLike[str], node: str, pid: int | None = None) -> Path:
    return status_dir(socket) / f"{node}-{os.getpid() if pid is None else pid}.json"


def write(path: Path, doc: dict[str, Any]) -> None:
    """Atomically replace `path` with `doc` plus pid and written_at (readable by the supervisor's
    group, like the socket's directory: the status holds no secret)."""
    path.parent.mkdir(mode=0o755, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({**doc, "pid": os.getpid(), "written_at": time.time()},
                              sort_keys=True))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process (the replicator's own user): it exists
    return True


def read_all(socket: str | os.PathLike[str], now: float | None = None) -> list[dict[str, Any]]:
    """Every replicator's last document next to `socket`, oldest pid first, each with `stale`:
    "" when current, else why it is not (the process is gone, or it stopped writing)."""
    now = time.time() if now is None else now
    out = []
    try:
        files = sorted(status_dir(socket).glob("*.json"))
    except OSError:
        return []
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue  # removed or replaced while listed
        if not isinstance(doc, dict):
            continue
        pid, written = doc.get("pid"), doc.get("written_at")
        if not isinstance(pid, int) or not isinstance(written, (int, float)):
            continue
        if not _alive(pid):
            doc["stale"] = f"process {pid} is gone (status from {now - written:.0f} s ago)"
        elif now - written > STALE_S:
            doc["stale"] = f"not updated for {now - written:.0f} s"
        else:
            doc["stale"] = ""
        doc["file"] = str(f)
        out.append(doc)
    return out


def remove_dead(socket: str | os.PathLike[str], node: str) -> list[str]:
    """A replicator starting for `node` removes the files of its dead predecessors (SIGKILL, a
    crash): its own file now stands for the node's links. Returns what it removed (logged)."""
    gone = []
    for doc in read_all(socket):
        if doc.get("node") == node and doc["stale"].startswith("process "):
            remove(Path(doc["file"]))
            gone.append(f"{doc['file']} ({doc['stale']})")
    return gone
