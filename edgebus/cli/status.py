"""`edgebus status`: the supervisor at a glance (tables), or the whole document with --json."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from edgebus.cli.common import add_socket_option, human_size, print_table, print_tree, socket_path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status", help="show the supervisor's status: disk, memory, topics, clients, groups, lag",
        description="Uptime, version, data directory, disk used and free (with the watermarks), "
                    "memory and CPU, every topic's partitions with sizes and offsets, connected "
                    "clients, consumer groups with their lag, and the links of every replicator "
                    "beside this supervisor (docs/REPLICATION.md, \"Watching it\").",
    )
    p.add_argument("--json", action="store_true", help="print the status as one JSON document")
    p.add_argument("--all", action="store_true",
                   help="also list internal topics (__consumer_offsets) and every client")
    p.add_argument("--replicator", metavar="FILE",
                   help="also show the links of the replicator that runs with this config "
                        "(from its metrics.listen endpoint), as `edgebus replicate --status`")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgebus import Admin, replicator_status
    from edgebus.cli import status_links

    with Admin(socket=socket_path(args)) as admin:
        status = admin.status()
    links, problem = _replication(args.replicator) if args.replicator else (None, "")
    # The replicators are separate processes: each leaves its links' status next to the socket.
    replicators = replicator_status.read_all(socket_path(args))
    if args.json:
        if args.replicator:
            status["replication"] = links if links is not None else {"error": problem}
        print(json.dumps({**status, "replicators": replicators}, indent=2, sort_keys=True))
    else:
        render(status, show_all=args.all)
        status_links.render(replicators, sys.stdout)
        if args.replicator:
            print(f"\nreplication ({args.replicator}):")
            if links is None:
                print(f"  {problem}")
            else:
                from edgebus.cli.replicate import print_links

                print_links(links)
    return 0


def _replication(config: str) -> tuple[dict[str, Any] | None, str]:
    """The replicator's own status (its links live in its process, not the supervisor's)."""
    from bridges.replicator.config import load_config
    from edgebus.cli.replicate import fetch_status

    return fetch_status(load_config(config), config)


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m {s}s"
    return f"{minutes}m {s}s" if minutes else f"{s}s"


def _dash(v: Any) -> str:
    return "-" if v is None or v == -1 else str(v)


def render(st: dict[str, Any], show_all: bool = False, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if "uptime_s" not in st or not isinstance(st.get("topics"), dict):
        # Not the document this version knows (another supervisor version): show it as it is.
        print_tree(st, out=out)
        return
    disk = st.get("disk", {})
    cpu_pct = st.get("cpu_percent")
    fields = [
        ("version", st.get("version")),
        ("pid", st.get("pid")),
        ("uptime", _duration(st.get("uptime_s", 0))),
        *_started_field(st.get("previous_stop")),
        ("data dir", st.get("data_dir")),
        ("socket", st.get("socket")),
        ("disk", f"{human_size(disk.get('used', 0))} used, {human_size(disk.get('free', 0))} free "
                 f"of {human_size(disk.get('total', 0))}"
                 + (f" (low watermark {human_size(disk['low_watermark'])}"
                    f" = {disk.get('low_watermark_setting')}, high "
                    f"{human_size(disk.get('high_watermark', 0))})"
                    if "low_watermark" in disk else "")),
        ("disk state", _disk_state(disk, st.get("fsync_running"))),
        *_offline_field(st),
        *_clock_field(st),
        ("log data", human_size(st.get("data_bytes", 0))),
        ("memory", f"{human_size(st.get('rss_bytes', 0))} RSS"),
        ("cpu", f"{st.get('cpu_s', 0)} s" + (f", {cpu_pct}% now" if cpu_pct is not None else "")),
        ("clients", len(st.get("clients", [])) if "clients" in st else st.get("connections")),
        ("traffic", f"{st.get('records_in', 0)} records in ({human_size(st.get('bytes_in', 0))}), "
                    f"{st.get('records_out', 0)} out ({human_size(st.get('bytes_out', 0))})"),
        ("fsyncs", f"{st.get('fsyncs', 0)}" + (f", {st['fsync_avg_ms']} ms average"
                                                if st.get("fsync_avg_ms") is not None else "")),
        ("kafka", _kafka_line(st.get("kafka"))),
        ("metrics", _metrics_line(st.get("metrics"))),
        ("config", _reload_line(st.get("reload"))),
    ]
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        print(f"{key + ':':<{width + 1}} {_dash(value)}", file=out)

    rows = []
    for name, topic in sorted(st.get("topics", {}).items()):
        if name.startswith("__") and not show_all:
            continue
        for p in topic.get("partitions", []):
            rows.append((name, p["partition"], p["log_start_offset"], p["log_end_offset"],
                         p["log_end_offset"] - p["log_start_offset"], human_size(p["size_bytes"]),
                         p["segments"], "OFFLINE" if p.get("offline") else _gaps(p)))
    print(file=out)
    if rows:
        print_table(["TOPIC", "PARTITION", "LOG START", "LOG END", "RECORDS", "SIZE", "SEGMENTS",
                     ""], rows, out=out)
    else:
        print("no topics", file=out)

    groups = st.get("groups", [])
    print(file=out)
    if groups:
        grows = []
        for g in groups:
            for p in g["partitions"] or [{"topic": "-", "partition": "-", "committed": None,
                                          "log_end_offset": None, "lag": None}]:
                grows.append((g["group"], g["state"], g["members"], p["topic"], p["partition"],
                              _dash(p["committed"]), _dash(p["log_end_offset"]), _dash(p["lag"])))
        print_table(["GROUP", "STATE", "MEMBERS", "TOPIC", "PARTITION", "COMMITTED", "LOG END",
                     "LAG"], grows, out=out)
    else:
        print("no consumer groups", file=out)

    kafka_conns = [c for kl in (st.get("kafka") or {}).get("listeners", []) for c in kl["connections"]]
    if kafka_conns:
        print(file=out)
        print_table(["KAFKA CLIENT", "PEER", "CLIENT ID", "USER", "REQUESTS", "PARKED FETCHES",
                     "QUEUED OUT"],
                    [(c["id"], c["peer"], _dash(c["client_id"]), _dash(c["principal"]),
                      c["requests"], c["parked_fetches"], human_size(c["output_bytes"]))
                     for c in kafka_conns], out=out)

    clients = st.get("clients", [])
    if clients and show_all:
        print(file=out)
        print_table(["CLIENT", "PID", "UID", "REQUESTS", "PARKED FETCHES", "QUEUED OUT"],
                    [(c["id"], c["pid"], c["uid"], c["requests"], c["parked_fetches"],
                      human_size(c["output_bytes"])) for c in clients], out=out)


def _gaps(p: dict[str, Any]) -> str:
    """A mirror partition's gap records, in a few words (docs/REPLICATION.md, "Gaps")."""
    gaps = p.get("gaps") or []
    if not gaps:
        return ""
    lost = sum(g["end"] - g["start"] for g in gaps)
    last = gaps[-1]
    why = {1: "retention", 2: "max_age"}.get(last["reason"], "?")
    return (f"GAP: {lost} offsets never shipped ({len(gaps)} record(s); last "
            f"{last['start']}..{last['end'] - 1}, {why})")
def _kafka_line(kafka: dict[str, Any] | None) -> str:
    """"127.0.0.1:9092 (TLS, SASL PLAIN), 2 connections" or "off"."""
    if not kafka:
        return "off"
    parts = []
    for kl in kafka.get("listeners", []):
        extra = (["TLS"] if kl.get("tls") else []) + (
            [f"SASL {'/'.join(kl['sasl'])}"] if kl.get("sasl") else [])
        parts.append(kl["listen"] + (f" ({', '.join(extra)})" if extra else ""))
    n = sum(len(kl.get("connections", [])) for kl in kafka.get("listeners", []))
    return f"{', '.join(parts)}, {n} connection{'s' if n != 1 else ''}"


def _metrics_line(m: dict[str, Any] | None) -> str:
    """"http://127.0.0.1:9464/metrics", "off", or "DOWN: cannot listen on ...": a Prometheus
    that scrapes nothing says only that the target is gone; this says why."""
    if not m or m.get("state") == "off":
        return "off"
    if m.get("state") == "serving":
        host = str(m.get("listen", "")).rpartition(":")[0]
        return f"http://{host}:{m.get('port')}/metrics"
    since = (f" (since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(m['error_at']))})"
             if m.get("error_at") else "")
    return f"DOWN: {m.get('error') or 'not serving'}{since}; `edgebus reload` tries again"


def _reload_line(rl: dict[str, Any] | None) -> str:
    """"edgebus.yaml, reloaded 2 times; PENDING RESTART: http.listen (...)" or "-"."""
    if not rl or not rl.get("config"):
        return "-" if not rl else "built-in defaults"
    text = rl["config"] + (f", reloaded {rl['reloads']} time{'s' if rl['reloads'] != 1 else ''}"
                           if rl.get("reloads") else "")
    if rl.get("last_error"):
        text += f"; LAST RELOAD FAILED (running configuration kept): {rl['last_error']}"
    pending = rl.get("pending_restart") or {}
    if pending:
        text += "; PENDING RESTART: " + ", ".join(
            f"{k} ({v['running']} -> {v['file']})" for k, v in pending.items())
    return text


def _started_field(previous: str | None) -> list[tuple[str, Any]]:
    """A line only after an unclean stop (edgebus/log/cleanstop.py)."""
    if previous == "killed":
        return [("started", "after an UNCLEAN stop: the supervisor was killed or crashed "
                            "(nothing written was lost)")]
    if previous == "machine-down":
        return [("started", "after an UNCLEAN stop: the machine went down (power cut, kernel "
                            "crash); unsynced records may be lost; see the log")]
    if previous == "unknown":
        return [("started", "after an UNKNOWN stop: the data directory had no run marker (an "
                            "older edgebus?); checked as after a power cut; see the log")]
    return []


def _offline_field(st: dict[str, Any]) -> list[tuple[str, Any]]:
    """A line only when some partition (internal ones included) is offline."""
    offline = [(f"{t}-{p['partition']}", p.get("offline_reason"))
               for t, topic in sorted(st.get("topics", {}).items())
               for p in topic.get("partitions", []) if p.get("offline")]
    if not offline:
        return []
    names = [n for n, _ in offline]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    first = next((f"{n}: {why}" for n, why in offline if why), None)  # the file and errno
    return [("offline", f"{len(names)} partition(s) refuse appends after an I/O error ({shown}); "
                        + (f"{first}; " if first else "the log says why; ")
                        + "restart edgebus to run recovery")]


def _clock_field(st: dict[str, Any]) -> list[tuple[str, Any]]:
    behind = (st.get("clock") or {}).get("behind_log_ms", 0)
    if (st.get("clock") or {}).get("unset"):
        return [("clock", "NOT SET (reads before 2025): append times are of the unset clock")]
    if not behind:
        return []
    return [("clock", f"BEHIND the log by {_duration(behind / 1000)} "
                      f"({st['clock'].get('partition')}): append times are held there, "
                      "retention by time waits")]


def _disk_state(disk: dict[str, Any], fsync: dict[str, Any] | None = None) -> str:
    state = disk.get("state")
    if state is None:
        return "-"
    text = "ok" if state == "ok" else (
        "FULL: no space left; appends are refused until space is freed" if state == "full" else
        "LOW: topics with on_disk_full=reject refuse appends; drop-oldest topics shrink")
    if disk.get("read_only"):
        text = ("READ-ONLY filesystem: appends fail; repair it and remount it read-write, "
                "then restart edgebus")
    extra = []
    if disk.get("rejected_appends"):
        extra.append(f"{disk['rejected_appends']} appends refused")
    if disk.get("dropped_segments"):
        extra.append(f"{disk['dropped_segments']} segments dropped "
                     f"({human_size(disk.get('dropped_bytes', 0))})")
    if disk.get("error"):
        extra.append(f"error: {disk['error']}")
    # A stall of a second or more: a healthy card's fsync takes milliseconds.
    if fsync and fsync.get("seconds", 0) >= 1:
        text = f"STALLED: fsync of {fsync['what']} running for {fsync['seconds']} s; " + text
    return text + (f" ({', '.join(extra)})" if extra else "")
