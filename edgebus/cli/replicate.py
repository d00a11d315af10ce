"""`edgebus replicate --config FILE`: the replicator (bridges/replicator, docs/REPLICATION.md)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replicate", help="ship topics to a peer edgebus node (foreground; SIGTERM "
                                         "stops it cleanly)")
    p.add_argument("--config", required=True, metavar="FILE",
                   help="the replicator's YAML config (see docs/REPLICATION.md)")
    p.add_argument("--check", action="store_true", dest="check_only",
                   help="check the config file and exit (status 0 if valid)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bridges.replicator.config import load_config
    from bridges.replicator.main import run as run_replicator

    cfg = load_config(args.config)
    if args.check_only:
        print(f"{args.config}: valid (node {cfg.node}, {len(cfg.links)} link(s): "
              + ", ".join(f"{ln.name} -> {ln.target} {ln.address}" for ln in cfg.links) + ")")
        return 0
    return run_replicator(cfg)
