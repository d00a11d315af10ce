"""`edgebus consume TOPIC`: print records as text, JSON lines or a kcat-style template."""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from edgebus.backoff import backoff_delay
from edgebus.cli.common import (
    add_socket_option,
    int_in_range,
    partition_number,
    socket_path,
)
from edgebus.cli.recordfmt import BINARY_ENCODINGS, Template, json_line, text_line
from edgebus.errors import EdgebusError, UnknownPartitionError, UnknownTopicError

# One poll waits at most this long, so --timeout-ms is honoured promptly.
POLL_SLICE_MS = 1000
# Waits between attempts while the supervisor is away (a restart takes about a second).
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 5.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "consume", help="print records of a topic",
        description="Print records as they arrive, until --max records, --timeout-ms without "
                    "new records, the end of every partition (--exit-at-end), or Ctrl-C; a "
                    "restart of the supervisor meanwhile is waited out (it reconnects).",
    )
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("--group", metavar="G", help="consumer group (commits its offsets)")
    p.add_argument("--from-beginning", action="store_true",
                   help="start at the oldest retained record (with --group: only when the group "
                        "has no committed offset)")
    p.add_argument("--partition", type=partition_number, metavar="P",
                   help="read only this partition")
    p.add_argument("--offset", type=int_in_range(0, what="offset"), metavar="O",
                   help="start at this offset (needs --partition)")
    p.add_argument("--max", type=int_in_range(1, what="--max"), metavar="N",
                   help="exit after N records")
    p.add_argument("--format", default="text", metavar="FORMAT",
                   help="text: the value per line (bytes as they are); json: one object per "
                        "record per line (bytes that are not UTF-8 as {\"base64\": ...}); or a "
                        "template as kcat -f: %%t topic, %%p partition, %%o offset, %%T timestamp, "
                        "%%k key, %%K key length, %%s value, %%S value length, %%h headers, %%%% "
                        "a percent sign, \\n \\t \\0 \\xNN escapes; nothing is added "
                        "(end it with \\n)")
    p.add_argument("--binary", choices=BINARY_ENCODINGS, default="base64",
                   help="json: how bytes that are not UTF-8 are written (default: base64)")
    p.add_argument("--print-key", action="store_true",
                   help="text format: print key<TAB>value ('null' for no key)")
    p.add_argument("-e", "--exit-at-end", action="store_true",
                   help="exit once every partition read has been read to its end (kcat -e)")
    p.add_argument("--timeout-ms", type=int_in_range(0, what="--timeout-ms"), metavar="MS",
                   help="exit after MS milliseconds without a new record")
    add_socket_option(p)
    # The check reports through this command's parser, so its usage line is the one shown.
    p.set_defaults(func=run, check=functools.partial(check, parser=p))


def check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.format not in ("text", "json"):
        if "%" not in args.format:
            parser.error(f"argument --format: invalid choice: {args.format!r} (text, json, or "
                         "a template with % tokens such as '%k %s\\n')")
        try:
            args.template = Template(args.format)
        except ValueError as e:
            parser.error(f"--format: {e}")
    if args.offset is not None and args.partition is None:
        parser.error("--offset needs --partition")
    if args.offset is not None and args.from_beginning:
        parser.error("--offset and --from-beginning cannot be used together")
    if args.print_key and args.format == "json":
        parser.error("--print-key applies to --format text only (json always has the key)")
    if args.print_key and args.format != "text":
        parser.error("--print-key applies to --format text only (a template has %k)")


def _open(args: argparse.Namespace) -> Any:
    from edgebus import Consumer, TopicPartition

    reset = "earliest" if args.from_beginning else "latest"
    if args.group is not None and args.partition is None:
        return Consumer(args.topic, group_id=args.group, auto_offset_reset=reset,
                        socket=socket_path(args))
    consumer = Consumer(group_id=args.group, auto_offset_reset=reset, socket=socket_path(args),
                        enable_auto_commit=args.group is not None)
    try:
        partitions = consumer.partitions_for_topic(args.topic)
        if not partitions:
            raise UnknownTopicError(f"unknown topic {args.topic!r}")
        if args.partition is not None:
            if args.partition not in partitions:
                raise UnknownPartitionError(
                    f"topic {args.topic!r} has no partition {args.partition} "
                    f"(it has {len(partitions)})")
            partitions = {args.partition}
        tps = [TopicPartition(args.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if args.offset is not None:
            consumer.seek(tps[0], _start_within(consumer, tps[0], args.offset))
        elif args.from_beginning and args.group is None:
            # With a group, a partition starts at its committed offset and the reset policy
            # (earliest) applies only where there is none, as --help says and Kafka does.
            consumer.seek_to_beginning(*tps)
    except BaseException:
        consumer.close()
        raise
    return consumer


def _start_within(consumer: Any, tp: Any, offset: int) -> int:
    """--offset inside the partition's log, saying so when it is not (an offset past the end, or
    deleted by retention, would otherwise read as nothing at all, or start at the end)."""
    lo = consumer.beginning_offsets([tp])[tp]
    hi = consumer.end_offsets([tp])[tp]
    start = min(max(offset, lo), hi)
    if start != offset:
        held = f"offsets {lo}..{hi - 1}" if hi > lo else f"no records (its log ends at {hi})"
        print(f"edgebus consume: {tp.topic}-{tp.partition} holds {held}, not {offset}; "
              f"starting at {start}", file=sys.stderr)
    return int(start)


def formatter(args: argparse.Namespace) -> Callable[[Any], bytes]:
    if args.format == "json":
        return functools.partial(json_line, binary=args.binary)
    if args.format == "text":
        return functools.partial(text_line, print_key=args.print_key)
    template: Template = getattr(args, "template", None) or Template(args.format)
    return template.render


def at_end(consumer: Any) -> bool:
    """Every assigned partition read up to the end its last fetch reported (a group member
    must have its assignment first)."""
    tps = consumer.assignment()
    if not tps:
        return False
    for tp in tps:
        end = consumer.highwater(tp)
        if end is None or consumer.position(tp) < end:
            return False
    return True


def run(args: argparse.Namespace, stdout: BinaryIO | None = None) -> int:
    out = stdout or sys.stdout.buffer
    fmt = formatter(args)
    count = 0
    consumer = _open(args)
    try:
        last_record = time.monotonic()
        outage = 0  # failed polls in a row (the supervisor gone)
        while args.max is None or count < args.max:
            if args.exit_at_end and at_end(consumer):
                break
            wait = POLL_SLICE_MS
            if args.timeout_ms is not None:
                left = args.timeout_ms - (time.monotonic() - last_record) * 1000
                wait = max(0, min(wait, int(left)))
            want = None if args.max is None else args.max - count
            try:
                polled = consumer.poll(timeout_ms=wait, max_records=want)
            except EdgebusError as e:
                # A supervisor restart (systemctl restart, an upgrade) must not end a tail, as
                # it ends none of kcat's: the Consumer reconnects at its next poll, from its
                # positions (a group member rejoins and resumes from its commits).
                quiet = (time.monotonic() - last_record) * 1000
                if not e.retriable or (args.timeout_ms is not None and quiet >= args.timeout_ms):
                    raise
                if outage == 0:
                    print(f"edgebus consume: {e}; reconnecting (Ctrl-C stops)", file=sys.stderr)
                time.sleep(backoff_delay(outage, RECONNECT_FIRST_S, RECONNECT_MAX_S))
                outage += 1
                continue
            if outage:
                print("edgebus consume: reconnected", file=sys.stderr)
                outage = 0
            got = 0
            for records in polled.values():
                for record in records:
                    if want is not None and got >= want:
                        break
                    out.write(fmt(record))
                    got += 1
            if got:
                out.flush()
                count += got
                last_record = time.monotonic()
            elif args.timeout_ms is not None and wait == 0:
                break
    finally:
        consumer.close()
    print(f"consumed {count} record{'' if count == 1 else 's'}", file=sys.stderr)
    return 0
