"""`edgebus produce TOPIC`: one record per line of standard input."""

from __future__ import annotations

import argparse
import sys
from typing import Any, BinaryIO

from edgebus.cli.common import add_socket_option, partition_number, socket_path
from edgebus.errors import InvalidRequestError
from edgebus.protocol.messages import ACKS_BY_NAME

# Send results are checked (and their futures released) every this many records, so that a long
# input neither holds a future per line nor reports a failure only at the very end.
CHECK_EVERY = 10_000
# How long to wait for the acknowledgements of records already flushed.
ACK_TIMEOUT_S = 60.0


def _separator(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("the key separator must not be empty")
    return text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "produce", help="append one record per line of standard input",
        description="Append one record per line read from standard input (the trailing newline "
                    "is removed, nothing else). The count is printed to standard error at EOF.",
    )
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("--key-separator", type=_separator, metavar="SEP",
                   help="split each line at the first SEP into key and value "
                        "(e.g. --key-separator $'\\t'); a line without SEP is an error")
    p.add_argument("--partition", type=partition_number, metavar="P",
                   help="append to this partition (default: by key hash, or spread)")
    p.add_argument("--acks", choices=list(ACKS_BY_NAME), default="written",
                   help="acknowledgement level (default: written; see README)")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, stdin: BinaryIO | None = None) -> int:
    from edgebus import Producer

    stdin = stdin or sys.stdin.buffer
    sep = args.key_separator.encode() if args.key_separator is not None else None
    count = 0
    pending: list[Any] = []
    producer = Producer(socket=socket_path(args), acks=args.acks)
    try:
        for lineno, line in enumerate(stdin, 1):
            if line.endswith(b"\n"):
                line = line[:-1]
            key = None
            if sep is not None:
                key, found, line = line.partition(sep)
                if not found:
                    _settle(producer, pending)
                    raise InvalidRequestError(
                        f"line {lineno} has no key separator {args.key_separator!r} "
                        f"({count} records were produced before it)")
            pending.append(producer.send(args.topic, line, key=key, partition=args.partition))
            count += 1
            if len(pending) >= CHECK_EVERY:
                _settle(producer, pending)
        _settle(producer, pending)
    finally:
        producer.close()
    print(f"produced {count} record{'' if count == 1 else 's'} to {args.topic}", file=sys.stderr)
    return 0


def _settle(producer: Any, pending: list[Any]) -> None:
    """Flush, then raise the first failed send (its error names the cause)."""
    producer.flush()
    for future in pending:
        future.get(ACK_TIMEOUT_S)
    pending.clear()
