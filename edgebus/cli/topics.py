"""`edgebus topics create|alter|list|describe|delete`."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence
from typing import Any

from edgebus.cli.common import (
    add_socket_option,
    human_size,
    partition_count,
    print_table,
    socket_path,
)
from edgebus.config import TOPIC_CONFIG_KEYS, parse_topic_setting
from edgebus.errors import ConfigError, error_for_code


def config_entry(text: str) -> tuple[str, str]:
    """An argparse type for `--config key=value`: checked like the config file, sent as the
    decimal value ("retention_ms=7d" -> ("retention_ms", "604800000"))."""
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    if key.strip() == "partitions":  # `topics describe` lists it among the settings
        raise argparse.ArgumentTypeError(
            "partitions is not a --config setting: `edgebus topics create --partitions N` sets "
            "it, and an existing topic keeps its count here (a Kafka admin client's "
            "CreatePartitions can grow it, which moves keys to other partitions: "
            "docs/KAFKA-GROUPS.md)")
    try:
        return key.strip(), str(parse_topic_setting(key.strip(), value.strip()))
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class ConfigEntries(argparse.Action):
    """`--config KEY=VALUE [KEY=VALUE ...]`, repeatable. The option takes several entries, so
    argparse would also swallow a NAME written after them (`--config a=b NAME`): a last value
    without "=" while no NAME was given yet is kept as the NAME (topic names cannot hold "="),
    and `_check_name` puts it in place. Any other value without "=" is a bad entry."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        texts = [values] if isinstance(values, str) else list(values or [])
        if (texts and "=" not in texts[-1] and getattr(namespace, "name", None) is None
                and getattr(namespace, "name_after_config", None) is None):
            namespace.name_after_config = texts.pop()
        try:
            entries = [config_entry(t) for t in texts]
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentError(self, str(e)) from None
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), *entries])


def _check_name(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    trailing = getattr(args, "name_after_config", None)
    if trailing is not None and args.name is not None:
        parser.error(f"unrecognized arguments: {args.name}")
    if trailing is not None:
        args.name = trailing
    if args.name is None:
        parser.error("the following arguments are required: NAME")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("topics", help="create, alter, list, describe and delete topics")
    tsub = p.add_subparsers(dest="topics_command", metavar="COMMAND", required=True)

    c = tsub.add_parser("create", help="create a topic", usage=(
        "%(prog)s [-h] [--partitions N] [--config KEY=VALUE [KEY=VALUE ...]] [--socket PATH] NAME"))
    # Optional for argparse only: `--config` may have taken it (ConfigEntries, _check_name).
    c.add_argument("name", metavar="NAME", nargs="?")
    c.add_argument("--partitions", type=partition_count, metavar="N",
                   help="number of partitions (default: the supervisor's topic_defaults)")
    c.add_argument("--config", action=ConfigEntries, nargs="+", default=[],
                   metavar="KEY=VALUE", dest="configs",
                   help=f"topic setting, repeatable; keys: {', '.join(TOPIC_CONFIG_KEYS)}; "
                        "sizes like 64MiB and durations like 7d are accepted")
    c.add_argument("--if-not-exists", action="store_true",
                   help="a topic of that name existing already is no error (it is left as it is)")
    c.set_defaults(func=create, check=functools.partial(_check_name, parser=c))

    a = tsub.add_parser("alter", help="change settings of a topic",
                        description="Change settings of an existing topic; the others keep their "
                                    "values. The change is kept across restarts.")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--config", type=config_entry, action="append", required=True,
                   metavar="KEY=VALUE", dest="configs",
                   help=f"setting to change, repeatable; keys: {', '.join(TOPIC_CONFIG_KEYS)}")
    a.set_defaults(func=alter)

    ls = tsub.add_parser("list", help="list topic names")
    ls.set_defaults(func=list_topics)

    d = tsub.add_parser("describe", help="partitions, offsets, sizes and settings of a topic")
    d.add_argument("name", metavar="NAME")
    d.set_defaults(func=describe)

    rm = tsub.add_parser("delete", help="delete a topic and all its data")
    rm.add_argument("name", metavar="NAME")
    rm.set_defaults(func=delete)

    pr = tsub.add_parser("promote", help="make a mirror topic writable (after a failover; stop "
                                         "the replicator that feeds it first)")
    pr.add_argument("name", metavar="NAME")
    pr.set_defaults(func=promote)

    for parser in (c, a, ls, d, rm, pr):
        add_socket_option(parser)


def _admin(args: argparse.Namespace):
    from edgebus import Admin

    return Admin(socket=socket_path(args))


def create(args: argparse.Namespace) -> int:
    kwargs = {} if args.partitions is None else {"partitions": args.partitions}
    with _admin(args) as admin:
        created = admin.create_topic(args.name, config=dict(args.configs) or None,
                                     exist_ok=args.if_not_exists, **kwargs)
    print(f"created topic {args.name}" if created else f"topic {args.name} exists already")
    return 0


def alter(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        after = admin.alter_topic_config(args.name, dict(args.configs))
    changed = dict(args.configs)
    print(f"altered topic {args.name}: "
          + ", ".join(f"{k} = {after.get(k, v)}" for k, v in changed.items()))
    return 0


def list_topics(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        names = admin.list_topics()
    for name in sorted(names):
        print(name)
    return 0


def describe(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        meta = admin.describe_topic(args.name)
    if getattr(meta, "error_code", 0):
        raise error_for_code(meta.error_code, meta.error_message)
    parts = sorted(meta.partitions, key=lambda p: p.partition)
    print(f"Topic: {meta.name}")
    print(f"Partitions: {len(parts)}")
    print("Configs:")
    for entry in sorted(meta.configs, key=lambda e: e.name):
        if entry.value == "" and entry.name == "mirror_of":  # an ordinary topic: no source
            continue
        print(f"  {entry.name} = {entry.value}")
    print()
    print_table(
        ["PARTITION", "LOG START", "LOG END", "SIZE", "SEGMENTS"],
        [(p.partition, p.log_start_offset, p.log_end_offset, human_size(p.size_bytes), p.segments)
         for p in parts],
    )
    return 0


def delete(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        admin.delete_topic(args.name)
    print(f"deleted topic {args.name}")
    return 0


def promote(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        admin.promote_topic(args.name)
    print(f"promoted topic {args.name}: it is now writable; its offsets go on from the mirror's")
    return 0
