"""Helpers shared by the command modules: socket resolution, argument types, output."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from edgebus import format as F
from edgebus import paths

# argparse is imported where it is used, never held here: the supervisor lets it go once its
# arguments are parsed (server/slim.py START_ONLY; issue 16, idle RSS).
if TYPE_CHECKING:
    import argparse


def add_socket_option(parser: argparse.ArgumentParser) -> None:
    import argparse

    # SUPPRESS: the option may be given before or after the command, and neither hides the other.
    parser.add_argument(
        "--socket", metavar="PATH", default=argparse.SUPPRESS,
        help="the supervisor's socket (default: $EDGEBUS_SOCKET, else the per-user or system "
             "default; see README)",
    )


def socket_path(args: argparse.Namespace) -> str:
    """The socket a client command connects to: --socket, else $EDGEBUS_SOCKET, else default."""
    return str(getattr(args, "socket", None) or paths.client_socket_path())


def int_in_range(lo: int, hi: int | None = None, what: str = "value") -> Any:
    """An argparse type: a decimal integer in [lo, hi]."""

    def parse(text: str) -> int:
        import argparse

        try:
            n = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if n < lo or (hi is not None and n > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise argparse.ArgumentTypeError(f"{what} must be {bound}, got {n}")
        return n

    return parse


partition_number = int_in_range(0, F.MAX_PARTITIONS - 1, "partition")
partition_count = int_in_range(1, F.MAX_PARTITIONS, "partitions")


def human_size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], out: Any = None) -> None:
    out = out or sys.stdout
    text_rows = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for row in [list(headers), *text_rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def print_tree(value: Any, out: Any = None) -> None:
    """Nested dicts and lists as indented `key: value` lines (YAML-like), for people."""
    for line in _tree_lines(value, 0):
        print(line, file=out or sys.stdout)


def _tree_lines(value: Any, indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{k}:")
                lines.extend(_tree_lines(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list) and item:
                # The item's first line goes after the dash, the rest under it.
                first, *rest = _tree_lines(item, indent + 1)
                lines.append(f"{pad}- {first.lstrip()}")
                lines.extend(rest)
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(f"{pad}{_scalar(value)}")
    return lines


def _scalar(v: Any) -> str:
    if isinstance(v, dict | list | bool) or v is None:
        return json.dumps(v)  # [] {} true false null, as in --json
    return str(v)
