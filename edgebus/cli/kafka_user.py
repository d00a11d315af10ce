"""`edgebus kafka-user add|remove|list --file FILE`: the users of the Kafka listener's SASL
(kafka.sasl_credentials_file). The file keeps SCRAM salted keys, never passwords
(edgebus/server/kafka/sasl.py); the password is read from stdin (one line) or prompted for."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from edgebus.config import read_yaml_file


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("kafka-user", help="manage the Kafka listener's SASL users (a credentials file)")
    p.add_argument("action", choices=("add", "remove", "list"))
    p.add_argument("user", nargs="?", help="the user name (add, remove)")
    p.add_argument("--file", required=True, type=Path, metavar="FILE",
                   help="the credentials file (kafka.sasl_credentials_file); made mode 0600")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgebus.server.kafka.sasl import add_user, remove_user

    if args.action == "list":
        doc = read_yaml_file(args.file) if args.file.exists() else {}
        for user, mechs in sorted((doc or {}).items()):
            print(f"{user}\t{', '.join(sorted(mechs))}")
        return 0
    if not args.user:
        print(f"edgebus kafka-user {args.action}: a user name is needed", file=sys.stderr)
        return 2
    if args.action == "remove":
        return 0 if remove_user(args.file, args.user) else 1
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.user}: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("edgebus kafka-user add: an empty password is refused", file=sys.stderr)
        return 2
    add_user(args.file, args.user, password)
    print(f"{args.user}: SCRAM-SHA-256 and SCRAM-SHA-512 keys written to {args.file} (PLAIN "
          "checks against them too)")
    return 0
