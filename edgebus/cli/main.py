"""Entry point of the `edgebus` command.

Exit status: 0 success, 1 an edgebus error (printed as `edgebus: error: ...`, no traceback),
2 a usage error (as argparse does), 78 a configuration error (EX_CONFIG from sysexits.h: the
units' `RestartPreventExitStatus=78` keeps systemd from restarting a service whose config file
is wrong; `serve` also for an unsafe socket directory or a socket, data directory or port
another process holds, edgebus/server/supervisor.py), 130 interrupted by Ctrl-C, 141 standard
output closed early (as a process killed by SIGPIPE would report).
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgebus import __version__
from edgebus.cli.common import add_socket_option
from edgebus.errors import ConfigError, EdgebusError

# argparse only inside the functions: the supervisor lets it go once its arguments are parsed
# (server/slim.py START_ONLY; issue 16, idle RSS).
if TYPE_CHECKING:
    import argparse

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 1, 2, 130, 141
EXIT_CONFIG = os.EX_CONFIG  # 78


def build_parser(only_serve: bool = False) -> argparse.ArgumentParser:
    """The whole CLI; with `only_serve`, just `edgebus serve` (parse_args uses that for the
    supervisor, so that its process does not hold the other commands' modules: ~0.6 MB of
    its idle RSS, issue 16)."""
    import argparse

    from edgebus.cli import serve

    parser = argparse.ArgumentParser(
        prog="edgebus",
        description="A Kafka-style durable event log for one Linux edge host.",
        epilog="Run `edgebus COMMAND --help` for a command's options.",
        formatter_class=serve.help_formatter() if only_serve else argparse.HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgebus {__version__}")
    add_socket_option(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if only_serve:
        serve.register(sub)
        return parser
    from edgebus.cli import (
        acl,
        bridge,
        consume,
        groups,
        kafka_user,
        produce,
        reload,
        replicate,
        service,
        status,
        topics,
        txn,
    )

    for module in (serve, topics, produce, consume, groups, bridge, replicate, status, service,
                   acl, kafka_user, txn, reload):
        module.register(sub)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check arguments; a usage error exits with status 2."""
    words = sys.argv[1:] if argv is None else list(argv)
    only_serve = words[:1] == ["serve"]
    if only_serve:  # before serve's imports: its process runs without inspect (server/slim.py)
        from edgebus.server.slim import import_dataclasses_without_inspect

        import_dataclasses_without_inspect()
    parser = build_parser(only_serve=only_serve)
    args = parser.parse_args(argv)
    check = getattr(args, "check", None)
    if check is not None:
        check(args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "serve":
        # The values without argparse's Namespace, which would keep argparse alive for as long
        # as the supervisor runs (its class's methods hold the module's globals).
        args = types.SimpleNamespace(**vars(args))  # type: ignore[assignment]
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Point stdout at /dev/null so that the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except ConfigError as e:
        print(f"edgebus: error: {_one_line(str(e))}", file=sys.stderr)
        return EXIT_CONFIG
    except EdgebusError as e:
        print(f"edgebus: error: {e}", file=sys.stderr)
        return EXIT_ERROR


def _one_line(message: str) -> str:
    """A config error on one line whatever it quotes (a value with a newline, an OS message)."""
    return " ".join(message.splitlines())


if __name__ == "__main__":
    sys.exit(main())
