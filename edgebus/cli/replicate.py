"""`edgebus replicate --config FILE`: the replicator (bridges/replicator, docs/REPLICATION.md);
with --status, what the running replicator reports on its metrics endpoint."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from edgebus.cli.common import human_size
from edgebus.errors import EdgebusError

EXIT_NOT_RUNNING = 3  # as LSB init scripts and `systemctl status` say "not running"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replicate", help="ship topics to a peer edgebus node or a Kafka cluster, "
                                         "and bring topics down from either (foreground; SIGTERM "
                                         "stops it cleanly)")
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="FILE",
                   help="the replicator's YAML config (see docs/REPLICATION.md)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true", dest="check_only",
                      help="check the config file and exit (status 0 if valid)")
    what.add_argument("--status", action="store_true",
                      help="show the running replicator's links (from its metrics.listen "
                           "endpoint; exit status 3 if it does not answer)")
    p.add_argument("--json", action="store_true", help="with --status: the whole document")


def run(args: argparse.Namespace) -> int:
    from bridges.replicator.config import load_config
    from bridges.replicator.main import run as run_replicator

    cfg = load_config(args.config)
    if args.check_only:
        print(f"{args.config}: valid (node {cfg.node}, {len(cfg.links)} link(s): "
              + ", ".join(f"{ln.name} -> {ln.target} {ln.address}" for ln in cfg.links) + ")")
        return 0
    if args.status:
        doc, problem = fetch_status(cfg, args.config)
        if doc is None:
            print(problem)
            return EXIT_NOT_RUNNING
        if args.json:
            print(json.dumps(doc, indent=2, sort_keys=True))
            return 0
        print_links(doc)
        return 0
    return run_replicator(cfg)


def fetch_status(cfg: Any, path: str) -> tuple[dict[str, Any] | None, str]:
    """The running replicator's /status document (cfg: its ReplicatorConfig, read from path), or
    None and why not. Also `edgebus status --replicator FILE`."""
    if not cfg.metrics_listen:
        raise EdgebusError(f"{path} sets no metrics.listen: the replicator serves no status to "
                           "ask (`edgebus status` beside its supervisor shows its links anyway)")
    import urllib.error  # here, not at the top: `edgebus serve` would carry it (~8 MB)
    import urllib.request

    url = f"http://{cfg.metrics_listen}/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read()), ""
    except (OSError, urllib.error.URLError, ValueError) as e:
        return None, f"the replicator does not answer at {url}: {e}"


def print_links(doc: dict[str, Any], out: TextIO | None = None) -> None:
    """Each link and its partitions, a line each (GAP lines under a partition with gaps)."""
    out = out or sys.stdout
    for name, link in sorted(doc["links"].items()):
        arrow = "<-" if link.get("direction") == "down" else "->"
        print(f"link {name} {arrow} {link['target']} {link['address']}: {link['state']}"
              + (f" ({link['last_error']})" if link["last_error"] else ""), file=out)
        for p in link["partitions"]:
            lag = "?" if p["lag_records"] is None else p["lag_records"]
            lag_b = "?" if p.get("lag_bytes") is None else human_size(p["lag_bytes"])
            print(f"  {p['topic']}-{p['partition']}: target end {p['target_end']}, "
                  f"lag {lag} records / {lag_b} / {p['lag_seconds']:.1f} s, shipped "
                  f"{p['shipped_records']} records"
                  + (f", {p['rate_records_s']:g} records/s ({p['rate_bytes_s']} B/s)"
                     if p.get("rate_records_s") else "")
                  + (f", HELD: {p['held']}" if p["held"] else ""), file=out)
            if p.get("gap_records") or p.get("expired_records"):
                print(f"    GAP: {p['gap_records']} records deleted by retention before "
                      f"they were shipped, {p['expired_records']} past max_age; last: "
                      f"{p['last_gap']}", file=out)
        for rule in link.get("rules", ()):
            lag = "?" if rule["lag_records"] is None else rule["lag_records"]
            print(f"  RULE {rule['filter']} -> {rule['pattern']}: {rule['subjects']} of at most "
                  f"{rule['max_subjects']} subjects ({rule['listed']} most behind listed above), "
                  f"lag {lag} records / {rule['lag_seconds']:.1f} s, {rule['held']} held, "
                  f"{rule['refused']} refused", file=out)
        if link.get("refused_count"):
            first, why = next(iter(link["refused_subjects"].items()), ("?", "?"))
            print(f"  REFUSED: {link['refused_count']} subject(s) not brought down (wildcard "
                  f"rules), e.g. {first}: {why}", file=out)
