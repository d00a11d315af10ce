"""`edgebus groups list|describe|reset-offsets`."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
from typing import Any

from edgebus.cli.common import add_socket_option, int_in_range, partition_number, print_table, socket_path


def iso_datetime(text: str) -> int:
    """An argparse type: an ISO 8601 date-time as ms since the epoch (local time when no zone is
    given, as Kafka's --to-datetime)."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 date-time such as 2024-05-01T12:00:00 or "
            f"2024-05-01T12:00:00+02:00, got {text!r}") from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time
    return int(when.timestamp() * 1000)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("groups", help="list and describe consumer groups, reset their offsets")
    gsub = p.add_subparsers(dest="groups_command", metavar="COMMAND", required=True)

    ls = gsub.add_parser("list", help="groups with members or committed offsets")
    ls.add_argument("--json", action="store_true", help="print one JSON document")
    ls.set_defaults(func=list_groups)

    d = gsub.add_parser("describe", help="members, assignment, committed offsets and lag",
                        description="Members and their partitions, then per partition the "
                                    "committed offset, the log end offset and the lag (log end "
                                    "minus committed; '-' when nothing is committed).")
    d.add_argument("group", metavar="GROUP")
    d.add_argument("--json", action="store_true", help="print one JSON document")
    d.set_defaults(func=describe)

    r = gsub.add_parser("reset-offsets", help="set a group's committed offsets (group must be empty)",
                        description="Set the committed offsets of GROUP for a topic. The group "
                                    "must have no active members: stop its consumers first.")
    r.add_argument("group", metavar="GROUP")
    r.add_argument("--topic", required=True, metavar="T")
    r.add_argument("--partition", type=partition_number, action="append", metavar="P",
                   dest="partitions", help="only this partition (repeatable; default: all)")
    to = r.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="the oldest retained offset")
    to.add_argument("--to-latest", action="store_true", help="the log end (skip everything)")
    to.add_argument("--to-offset", type=int_in_range(0, what="--to-offset"), metavar="N",
                    help="offset N (clamped to the retained range)")
    to.add_argument("--to-datetime", type=iso_datetime, metavar="ISO",
                    help="the first offset appended at or after this time")
    r.add_argument("--dry-run", action="store_true", help="show the new offsets, change nothing")
    r.set_defaults(func=reset_offsets, check=functools.partial(_check_reset, parser=r))

    for parser in (ls, d, r):
        add_socket_option(parser)


def _check_reset(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if not args.topic:
        parser.error("--topic must not be empty")


def _admin(args: argparse.Namespace) -> Any:
    from edgebus import Admin

    return Admin(socket=socket_path(args))


def _time(ms: int) -> str:
    if ms < 0:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="seconds")


def _or_dash(n: int) -> str:
    return "-" if n < 0 else str(n)


def _pid(pid: int) -> str:
    # Only the Unix socket names its peer's pid (SO_PEERCRED); a member that joined over the
    # Kafka listener (TCP) has none, and its CLIENT column holds its client.id.
    return "kafka client" if pid < 0 else str(pid)


def list_groups(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        groups = admin.list_groups()
    if args.json:
        print(json.dumps([{"group": g.group_id, "state": g.state, "assignor": g.assignor,
                           "members": g.members} for g in groups], indent=2))
        return 0
    print_table(["GROUP", "STATE", "MEMBERS", "ASSIGNOR"],
                [(g.group_id, g.state, g.members, g.assignor or "-") for g in groups])
    return 0


def describe(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        d = admin.describe_group(args.group)
    if args.json:
        print(json.dumps(_describe_json(d), indent=2))
        return 0
    print(f"Group: {d.group_id}")
    print(f"State: {d.state}  Generation: {d.generation or '-'}  Assignor: {d.assignor or '-'}")
    print(f"Members: {len(d.members)}")
    if d.members:
        print()
        print_table(["MEMBER", "CLIENT", "PID", "SESSION MS", "PARTITIONS"],
                    [(m.member_id, m.client_id, _pid(m.pid), m.session_timeout_ms,
                      ", ".join(f"{a.topic}-{p}" for a in m.assignment for p in a.partitions) or "-")
                     for m in d.members])
    print()
    print_table(["TOPIC", "PARTITION", "COMMITTED", "LOG END", "LAG", "MEMBER", "COMMITTED AT"],
                [(p.topic, p.partition, _or_dash(p.committed), _or_dash(p.log_end_offset),
                  _or_dash(p.lag), p.member_id or "-", _time(p.commit_time))
                 for p in d.partitions])
    total = sum(p.lag for p in d.partitions if p.lag >= 0)
    print(f"\nTotal lag: {total}")
    return 0


def _describe_json(d: Any) -> dict[str, Any]:
    return {
        "group": d.group_id, "state": d.state, "generation": d.generation, "assignor": d.assignor,
        "members": [{"member_id": m.member_id, "client_id": m.client_id,
                     "pid": None if m.pid < 0 else m.pid,
                     "session_timeout_ms": m.session_timeout_ms,
                     "assignment": [[a.topic, p] for a in m.assignment for p in a.partitions]}
                    for m in d.members],
        "partitions": [{"topic": p.topic, "partition": p.partition,
                        "committed": None if p.committed < 0 else p.committed,
                        "metadata": p.metadata,
                        "commit_time": None if p.commit_time < 0 else p.commit_time,
                        "log_end_offset": None if p.log_end_offset < 0 else p.log_end_offset,
                        "lag": None if p.lag < 0 else p.lag, "member_id": p.member_id or None}
                       for p in d.partitions],
    }


def reset_offsets(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        result = admin.reset_offsets(
            args.group, args.topic, earliest=args.to_earliest, latest=args.to_latest,
            offset=args.to_offset, timestamp_ms=args.to_datetime, partitions=args.partitions,
            dry_run=args.dry_run)
    print_table(["TOPIC", "PARTITION", "PREVIOUS", "NEW"],
                [(r.topic, r.partition, _or_dash(r.previous), r.offset) for r in result])
    if args.dry_run:
        print("\n(dry run: nothing was changed)")
    return 0
