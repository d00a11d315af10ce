"""`edgebus produce TOPIC`: one record per line (or per delimiter) of standard input, or one per
file with --value-file."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

from edgebus import format as F
from edgebus.cli.common import add_socket_option, partition_number, socket_path
from edgebus.cli.recordfmt import unescape
from edgebus.errors import EdgebusError, InvalidRequestError, RecordTooLargeError
from edgebus.protocol.messages import ACKS_BY_NAME

# Send results are checked (and their futures released) every this many records, so that a long
# input neither holds a future per line nor reports a failure only at the very end.
CHECK_EVERY = 10_000
# How long to wait for the acknowledgements of records already flushed.
ACK_TIMEOUT_S = 60.0
# Standard input is read this much at a time when records end with a -D delimiter.
READ_CHUNK = 64 * 1024
# No record can be larger than a batch, so input beyond this without a delimiter is an error,
# and the memory a record takes here stays bounded.
MAX_RECORD_BYTES = F.MAX_BATCH_BYTES


def _separator(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("the key separator must not be empty")
    return text


def _delimiter(text: str) -> bytes:
    try:
        delim = unescape(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not delim:
        raise argparse.ArgumentTypeError("the delimiter must not be empty")
    return delim


def _header(text: str) -> tuple[str, bytes]:
    name, eq, value = text.partition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value.encode()


def _value_file(text: str) -> BinaryIO:
    """Opened at once, so a missing or unreadable file is a usage error before anything is sent."""
    try:
        f = open(text, "rb")  # noqa: SIM115 (read and closed by run)
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {e.strerror}") from None
    size = os.fstat(f.fileno()).st_size
    if size > MAX_RECORD_BYTES:
        f.close()
        raise argparse.ArgumentTypeError(
            f"{text} is {size} bytes; a record must fit in a batch of {MAX_RECORD_BYTES} bytes")
    return f


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "produce", help="append one record per line of standard input",
        description="Append one record per line read from standard input (the trailing newline "
                    "is removed, nothing else), or per -D delimiter, or one record per "
                    "--value-file. The count is printed to standard error at the end.",
    )
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("--key-separator", type=_separator, metavar="SEP",
                   help="split each line at the first SEP into key and value "
                        "(e.g. --key-separator $'\\t'); a line without SEP is an error")
    p.add_argument("--partition", type=partition_number, metavar="P",
                   help="append to this partition (default: by key hash, or spread)")
    p.add_argument("--acks", choices=list(ACKS_BY_NAME), default="written",
                   help="acknowledgement level (default: written; see README)")
    p.add_argument("-D", "--delimiter", type=_delimiter, metavar="DELIM",
                   help="records end with DELIM instead of a newline, e.g. -D '\\0' for "
                        "NUL-separated input (escapes \\n \\r \\t \\0 \\\\ \\xNN; kcat -D)")
    p.add_argument("-H", "--header", type=_header, action="append", default=[],
                   metavar="NAME=VALUE", dest="headers",
                   help="add this header to every record; repeatable (kcat -H)")
    p.add_argument("-k", "--key", metavar="KEY", help="the key of every record")
    p.add_argument("--value-file", type=_value_file, action="append", metavar="FILE",
                   dest="value_files",
                   help="send the whole file, bytes as they are, as one record's value; "
                        "repeatable, one record per file (standard input is not read)")
    add_socket_option(p)
    p.set_defaults(func=run, check=functools.partial(check, parser=p))


def check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.key is not None and args.key_separator is not None:
        parser.error("--key and --key-separator cannot be used together")
    if args.value_files and (args.key_separator is not None or args.delimiter is not None):
        parser.error("--value-file reads no standard input: --key-separator and --delimiter "
                     "do not apply")


def split_records(stream: BinaryIO, delim: bytes) -> Iterator[bytes]:
    """The records of `stream`, each ended by `delim` (the last may lack it). Bounded: a record
    longer than MAX_RECORD_BYTES is an error, whatever the input."""
    buf = bytearray()
    scan = 0  # delim does not start before this in buf
    while True:
        i = buf.find(delim, scan)
        if i >= 0:
            yield bytes(buf[:i])
            del buf[: i + len(delim)]
            scan = 0
            continue
        if len(buf) > MAX_RECORD_BYTES:
            raise RecordTooLargeError(
                f"more than {MAX_RECORD_BYTES} bytes of input without the delimiter "
                f"{bytes(delim)!r}: no record can be that large (wrong -D?)")
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            break
        scan = max(0, len(buf) - len(delim) + 1)
        buf += chunk
    if buf:
        yield bytes(buf)


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    for line in stream:
        yield line[:-1] if line.endswith(b"\n") else line


def run(args: argparse.Namespace, stdin: BinaryIO | None = None) -> int:
    from edgebus import Producer

    stdin = stdin or sys.stdin.buffer
    sep = args.key_separator.encode() if args.key_separator is not None else None
    fixed_key = args.key.encode() if args.key is not None else None
    headers = args.headers or None
    what = "file" if args.value_files else "line" if args.delimiter is None else "record"
    if args.value_files:
        records: Iterator[bytes] = _read_files(args.value_files)
    elif args.delimiter is None:
        records = _lines(stdin)
    else:
        records = split_records(stdin, args.delimiter)
    count = 0
    acked = Acked()
    pending: list[tuple[int, Any]] = []
    producer = Producer(socket=socket_path(args), acks=args.acks)
    try:
        for lineno, line in enumerate(records, 1):
            key = fixed_key
            if sep is not None:
                key, found, line = line.partition(sep)
                if not found:
                    _settle(producer, pending, acked)
                    acked.first_failed = lineno
                    raise InvalidRequestError(
                        f"{what} {lineno} has no key separator {args.key_separator!r} "
                        f"({count} records were produced before it)")
            try:
                future = producer.send(args.topic, line, key=key, partition=args.partition,
                                       headers=headers)
            except EdgebusError:
                _settle(producer, pending, acked)  # an earlier failure is the one to report
                acked.first_failed = lineno
                raise
            pending.append((lineno, future))
            count += 1
            if len(pending) >= CHECK_EVERY:
                _settle(producer, pending, acked)
        _settle(producer, pending, acked)
    except EdgebusError:
        if count:  # with nothing sent yet, the error alone says it all
            # Which input made it, so that the user can resume: the error itself follows.
            first = acked.first_failed or count + 1
            # Batches in flight when one fails may still land (their partition had room again).
            later = " (some later ones were)" if acked.count > first - 1 else ""
            print(f"produced {acked.count} of {count} record{'' if count == 1 else 's'} sent "
                  f"to {args.topic}; {what} {first} was the first not produced{later}",
                  file=sys.stderr)
        raise
    finally:
        producer.close()
    print(f"produced {count} record{'' if count == 1 else 's'} to {args.topic}", file=sys.stderr)
    return 0


class Acked:
    """Records acknowledged so far, and the input line of the first that failed (0: none)."""

    def __init__(self) -> None:
        self.count = 0
        self.first_failed = 0


def _read_files(files: list[BinaryIO]) -> Iterator[bytes]:
    for f in files:
        with f:
            yield f.read(MAX_RECORD_BYTES + 1)


def _settle(producer: Any, pending: list[tuple[int, Any]], acked: Acked) -> None:
    """Flush, count what was acknowledged, then raise the first failed send (its error names
    the cause)."""
    producer.flush()
    error: EdgebusError | None = None
    for lineno, future in pending:
        try:
            future.get(ACK_TIMEOUT_S)
            acked.count += 1
        except EdgebusError as e:
            if error is None:
                error = e
                acked.first_failed = acked.first_failed or lineno
    pending.clear()
    if error is not None:
        raise error
