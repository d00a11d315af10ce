"""`edgebus bridge mqtt --config FILE` runs the MQTT bridge (bridges/mqtt); `edgebus bridge status`
shows what a running bridge reports in its status file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgebus.errors import EdgebusError

EXIT_NOT_RUNNING = 3  # as LSB init scripts and `systemctl status` say "not running"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bridge", help="run a bridge, or show a bridge's status")
    bsub = p.add_subparsers(dest="bridge_command", metavar="BRIDGE", required=True)

    m = bsub.add_parser("mqtt", help="run the MQTT bridge in the foreground (SIGTERM stops it "
                                     "cleanly)")
    m.add_argument("--config", required=True, metavar="FILE",
                   help="the bridge's YAML config (see bridges/mqtt/example.yaml)")
    m.add_argument("--check", action="store_true", dest="check_only",
                   help="check the config file and exit (status 0 if valid)")
    m.set_defaults(func=run_mqtt)

    # The replicator is a bridge too, so that `systemctl enable --now edgebus-bridge@replicate`
    # runs it under the same hardened template unit (config /etc/edgebus/bridge-replicate.yaml).
    r = bsub.add_parser("replicate", help="the replicator (same as `edgebus replicate`)")
    from edgebus.cli.replicate import add_arguments

    add_arguments(r)
    r.set_defaults(func=run_replicate)

    s = bsub.add_parser("status", help="show a bridge's status (exit status 3 if not running)")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="FILE", help="the bridge's config (finds its status file)")
    where.add_argument("--status-file", metavar="PATH", help="the status file itself")
    s.add_argument("--json", action="store_true", help="print the whole status as JSON")
    s.set_defaults(func=run_status)


def run_mqtt(args: argparse.Namespace) -> int:
    from bridges.mqtt.bridge import run
    from bridges.mqtt.config import load_config

    cfg = load_config(args.config)
    if args.check_only:
        from bridges.mqtt.check import limits, warnings

        print(f"{args.config}: valid ({len(cfg.ingress)} ingress, {len(cfg.egress)} egress "
              "route(s))")
        for line in limits(cfg):
            print(f"limit: {line}")
        for line in warnings(cfg):
            print(f"warning: {line}")
        return 0
    return run(cfg)


def run_replicate(args: argparse.Namespace) -> int:
    from edgebus.cli.replicate import run

    return run(args)


def run_status(args: argparse.Namespace) -> int:
    from bridges.mqtt.config import load_config
    from bridges.mqtt.metrics import fetch_status, read_status, status_line

    cfg = load_config(args.config) if args.config else None
    listen = cfg.metrics.listen if cfg is not None else None
    doc = None
    if listen is not None:
        # The running bridge itself answers: no file (and no file permissions) involved.
        try:
            doc = fetch_status(listen)
        except (OSError, ValueError):
            doc = None
    if doc is None:
        path = Path(args.status_file) if args.status_file else cfg.status_file  # type: ignore[union-attr]
        try:
            doc = read_status(path)
        except OSError as e:
            if listen is not None:
                print(f"mqtt bridge: not running (nothing answers on http://{listen}/status, and "
                      f"the status file {path}: {e.strerror or e})")
                return EXIT_NOT_RUNNING
            if not isinstance(e, FileNotFoundError):
                raise EdgebusError(f"cannot read the status file {path}: {e}") from None
            raise EdgebusError(f"no status file at {path}: the bridge has not run with this "
                               "config (or status.file points elsewhere; by default it is next "
                               "to the edgebus socket: run this with the bridge's "
                               "EDGEBUS_SOCKET)") from None
        except ValueError as e:
            raise EdgebusError(f"cannot read the status file {path}: {e}") from None
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(status_line(doc))
        if doc.get("last_error"):
            print(f"last error{_when(doc.get('last_error_at'))}: {doc['last_error']}")
    return 0 if doc["running"] else EXIT_NOT_RUNNING


def _when(at: object) -> str:
    """' (at 16:20:41 UTC, 5 min ago)': a last error long past (the bridge recovered from it
    since) must not read as the present state."""
    if not isinstance(at, int | float):
        return ""
    import time

    ago = max(0, int(time.time() - at))
    span = f"{ago} s" if ago < 120 else f"{ago // 60} min" if ago < 7200 else f"{ago // 3600} h"
    return f" (at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(at))} UTC, {span} ago)"
