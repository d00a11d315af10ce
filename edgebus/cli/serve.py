"""`edgebus serve`: run the supervisor in the foreground."""

from __future__ import annotations

import argparse
import sys

from edgebus.config import LOG_LEVELS, load_config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve", help="run the supervisor (the broker) in the foreground",
        description="Run the supervisor in the foreground: recover every partition, then serve "
                    "clients on the Unix socket until SIGINT or SIGTERM.",
    )
    p.add_argument("--config", metavar="FILE",
                   help="YAML configuration (default: $EDGEBUS_CONFIG, else built-in defaults; "
                        "see examples/edgebus.yaml)")
    p.add_argument("--data-dir", metavar="DIR", help="override the configured data directory")
    p.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS,
                   help="override the configured socket path")
    p.add_argument("--log-level", choices=LOG_LEVELS, type=str.upper,
                   help="override the configured log level")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config).with_overrides(
        data_dir=args.data_dir, socket=getattr(args, "socket", None), log_level=args.log_level,
    )
    # The supervisor prints the data directory and socket; say where they came from.
    print(f"edgebus: config {config.source or 'built-in defaults'}", file=sys.stderr, flush=True)
    from edgebus.server.slim import forget_parse_only_modules

    forget_parse_only_modules()  # before the supervisor's imports, which reuse the memory
    from edgebus.server.supervisor import run as run_supervisor

    return int(run_supervisor(config))
