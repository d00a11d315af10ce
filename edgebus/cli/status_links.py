"""The replication part of `edgebus status`: every replicator's links, from the status files the
replicators write next to the supervisor's socket (edgebus/replicator_status.py)."""

from __future__ import annotations

from typing import Any, TextIO

from edgebus.cli.common import human_size, print_table


def render(replicators: list[dict[str, Any]], out: TextIO) -> None:
    """Nothing at all when no replicator runs next to this supervisor (most installations)."""
    if not replicators:
        return
    print(file=out)
    rows = []
    held: dict[tuple[str, str], list[str]] = {}  # (link, why) -> partitions it holds
    for doc in replicators:
        who = f"{doc.get('node', '?')} (pid {doc['pid']})"
        for name, link in sorted((doc.get("links") or {}).items()):
            arrow = "<-" if link.get("direction") == "down" else "->"
            state = f"STALE: {doc['stale']}" if doc.get("stale") else link.get("state", "?")
            if link.get("last_error") and not doc.get("stale"):
                state += f" ({link['last_error']})"
            parts = link.get("partitions") or [{}]
            for p in parts:
                lag = p.get("lag_records")
                if p.get("held"):  # the reason below the table: one line per cause, not per row
                    held.setdefault((f"{who} {name}", p["held"]), []).append(
                        f"{p['topic']}-{p['partition']}")
                rows.append((who, f"{name} {arrow} {link.get('target')} {link.get('address')}",
                             "HELD" if p.get("held") else state,
                             f"{p['topic']}-{p['partition']}" if p else "-",
                             "-" if p.get("target_end") is None else p["target_end"],
                             "-" if lag is None else lag,
                             "-" if p.get("lag_bytes") is None else human_size(p["lag_bytes"]),
                             "-" if not p else f"{p.get('lag_seconds', 0.0):.1f}",
                             "-" if p.get("rate_records_s") is None else p["rate_records_s"],
                             p.get("gap_records", 0) + p.get("expired_records", 0) if p else "-",
                             p.get("already_there", "-") if p else "-"))
    print_table(["REPLICATOR", "LINK", "STATE", "PARTITION", "TARGET END", "LAG RECORDS",
                 "LAG BYTES", "LAG S", "RATE REC/S", "GAPS", "ALREADY THERE"], rows, out=out)
    for (where, why), tps in held.items():
        print(f"HELD by {where}: {', '.join(tps)}: {why}", file=out)
