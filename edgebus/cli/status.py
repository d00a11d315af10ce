"""`edgebus status`: the supervisor's view of itself."""

from __future__ import annotations

import argparse
import json

from edgebus.cli.common import add_socket_option, print_tree, socket_path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="show the supervisor's status")
    p.add_argument("--json", action="store_true", help="print the status as one JSON document")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgebus import Admin

    with Admin(socket=socket_path(args)) as admin:
        status = admin.status()
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print_tree(status)
    return 0
