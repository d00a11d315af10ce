"""`edgebus serve`: run the supervisor in the foreground."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from edgebus.config import LOG_LEVELS, load_config

# argparse only inside the functions: the supervisor lets it go once its arguments are parsed
# (server/slim.py START_ONLY; issue 16, idle RSS).
if TYPE_CHECKING:
    import argparse


def _columns() -> int:
    """shutil.get_terminal_size().columns without importing shutil, which imports bz2 and lzma
    and maps their libraries (~0.3 MB of the supervisor's RSS for good: issue 16)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def help_formatter() -> Any:
    """argparse's HelpFormatter, told the terminal's width (argparse would import shutil to find
    it out). Made when a parser is, so that this module holds nothing of argparse."""
    import argparse

    class HelpFormatter(argparse.HelpFormatter):
        def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                     width: int | None = None) -> None:
            super().__init__(prog, indent_increment, max_help_position,
                             width if width is not None else _columns() - 2)

    return HelpFormatter


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    import argparse

    p = sub.add_parser(
        "serve", help="run the supervisor (the broker) in the foreground",
        formatter_class=help_formatter(),
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


def run(args: Any) -> int:
    """args: parse_args' values (cli/main.py passes them as a SimpleNamespace for serve)."""
    from edgebus.server.slim import forget_start_only_modules, without_libyaml

    without_libyaml()  # so that PyYAML can be let go once the config is read (server/slim.py)
    file_config = load_config(args.config)
    config = file_config.with_overrides(
        data_dir=args.data_dir, socket=getattr(args, "socket", None), log_level=args.log_level,
    )
    # The supervisor prints the data directory and socket; say where they came from.
    print(f"edgebus: config {config.source or 'built-in defaults'}", file=sys.stderr, flush=True)
    forget_start_only_modules()  # before the supervisor's imports, which reuse the memory
    from edgebus.server.supervisor import run as run_supervisor

    return int(run_supervisor(config, file_config))
