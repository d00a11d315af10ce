"""The supervisor's status document, the one source for the STATUS API (`edgebus status`), the
metrics endpoint and nothing else.

`collect(server)` gives what an operator needs at a glance: version and uptime, disk state and
watermarks, process CPU and memory, connected clients, topics and partitions, consumer groups
with their lag, and traffic counters. Loop thread only: it reads the server's structures without
locks.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from edgebus.procmetrics import self_usage
from edgebus.server import gcpolicy
from edgebus.version import __version__

if TYPE_CHECKING:
    from edgebus.server.broker import Broker

_last_cpu: tuple[float, float] | None = None  # (monotonic time, cpu seconds) at the last collect


def process_usage() -> dict[str, Any]:
    """RSS, CPU seconds, and CPU percent since the previous call (of one core; None the first
    time). Reads only /proc/self (edgebus/procmetrics.py), which the unit's ProtectProc=/
    ProcSubset= leave visible; not psutil, whose import stayed in the supervisor's RSS (~3 MB)."""
    global _last_cpu
    u = self_usage()
    cpu_s = u.user_s + u.system_s
    now = time.monotonic()
    percent = None
    if _last_cpu is not None and now - _last_cpu[0] > 0.05:
        percent = round(100 * (cpu_s - _last_cpu[1]) / (now - _last_cpu[0]), 1)
    _last_cpu = (now, cpu_s)
    return {"rss_bytes": u.rss_bytes, "cpu_s": round(cpu_s, 3), "cpu_percent": percent,
            "threads": u.threads, "open_fds": u.open_fds}


def clients(broker: Any) -> list[dict[str, Any]]:
    """Connected clients as the kernel names them (SO_PEERCRED): pid and uid, never /proc."""
    return [
        {"id": c.id, "pid": c.pid, "uid": c.uid, "requests": c.requests,
         "parked_fetches": c.parked, "output_bytes": c.out_bytes}
        for c in list(broker.loop.conns.values())
    ]


def group_lags(broker: Any) -> list[dict[str, Any]]:
    """Every consumer group with its state and, per partition, committed offset, log end and lag
    (-1 when the group has committed nothing for that partition)."""
    lazy = getattr(broker, "lazy_groups", None)  # not made yet: no group exists (group_service)
    gh = lazy.made if lazy is not None else getattr(broker, "groups", None)
    coordinator = getattr(gh, "coordinator", None)
    store = getattr(gh, "store", None)
    if coordinator is None or store is None:
        return []
    live = getattr(coordinator, "groups", {})
    out = []
    for gid in sorted(set(live) | set(getattr(store, "table", {}))):
        g = live.get(gid)
        offsets = store.group_offsets(gid)
        tps = set(offsets)
        if g is not None:
            for tps_of_member in g.assignment.values():
                tps.update(tps_of_member)
        parts = []
        total_lag = 0
        for topic, part in sorted(tps):
            try:
                end = broker.logs.partition(topic, part).log_end_offset
            except Exception:  # the topic was deleted meanwhile
                end = -1
            c = offsets.get((topic, part))
            committed = c.offset if c is not None else -1
            lag = max(0, end - committed) if end >= 0 and committed >= 0 else -1
            total_lag += max(lag, 0)
            parts.append({"topic": topic, "partition": part, "committed": committed,
                          "log_end_offset": end, "lag": lag})
        out.append({
            "group": gid,
            "state": str(getattr(g.state, "value", g.state)) if g is not None else "Empty",
            "members": len(g.members) if g is not None else 0,
            "generation": g.generation if g is not None else 0,
            "lag": total_lag,
            "partitions": parts,
        })
    return out


def topics(broker: Any) -> dict[str, Any]:
    """Every topic (internal ones included) with its partitions' offsets and sizes."""
    logs = broker.logs
    out = {}
    for name in sorted(logs.topics()):
        parts = logs.partitions(name)
        out[name] = {
            "partitions": [
                {"partition": p.partition, "log_start_offset": p.log_start_offset,
                 "log_end_offset": p.log_end_offset, "size_bytes": p.size_bytes,
                 "segments": p.segment_count, "offline": p.offline,
                 # Why, naming the file and errno (partition_append.py write_failed).
                 **({"offline_reason": p.offline_reason, "offline_errno": p.offline_errno}
                    if p.offline else {}),
                 # A mirror's gap records: offsets its source never shipped (docs/REPLICATION.md).
                 **({"gaps": [{"start": g.start, "end": g.end, "reason": g.reason}
                              for g in p.gaps]} if p.gaps else {})}
                for p in parts
            ],
            "size_bytes": sum(p.size_bytes for p in parts),
        }
        # Traffic counters per topic (server/stats.py), so that readers (the web console) can
        # show rates from two looks.
        stats = getattr(broker, "stats", None)
        if stats is not None:
            rin = stats.topic_in.get(name, (0, 0))
            rout = stats.topic_out.get(name, (0, 0))
            out[name].update(records_in=rin[0], bytes_in=rin[1], records_out=rout[0],
                             bytes_out=rout[1])
    return out


def collect(broker: Broker) -> dict[str, Any]:
    disk = broker.disk
    if disk.total == 0:  # no check has run yet
        disk.check()
    stats = broker.stats
    doc: dict[str, Any] = {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(time.time() - broker.started, 1),
        "data_dir": str(broker.logs.data_dir),
        "socket": str(broker.socket_path),
        "disk": disk.snapshot(),
        **process_usage(),
        "gc": gcpolicy.snapshot(),  # the frozen start-up heap, collections per generation
        "connections": len(broker.loop.conns),
        # Refusals by the limits, and the answers queued for all connections (the budget's use).
        "limits": {"output_bytes": broker.loop.output_bytes,
                   "max_output_total_bytes": broker.loop.max_output_total,
                   "refused_connections": dict(stats.refused_connections),
                   "refused_fetches_output_budget": stats.refused_fetches_output_budget},
        "parked_fetches": broker.data.waiters.count,
        "records_in": stats.records_in,
        "bytes_in": stats.bytes_in,
        "fsyncs": broker.durable.committer.syncs,
        # The fsync (or checkpoint write) running now and for how long: a stalled card shows.
        "fsync_running": broker.housekeeping.fsync.snapshot(),
        "cleaner": broker.cleaner.status(),
        "clock": broker.housekeeping.clock.snapshot(),
        "previous_stop": broker.logs.previous_stop,  # clean, killed or machine-down
        "topics": topics(broker),
        "started_at": round(broker.started, 3),
    }
    doc["data_bytes"] = sum(t["size_bytes"] for t in doc["topics"].values())
    doc["clients"] = clients(broker)
    acl = getattr(broker, "acl", None)  # access control: policy and denials (server/acl/)
    doc["acl"] = acl.stats() if acl is not None else {"enabled": False}
    doc["groups"] = group_lags(broker)
    # The shm C data plane (listeners/shm_plane.py): PRODUCEs appended and answered in C.
    plane = getattr(getattr(broker, "shm", None), "plane", None)
    doc["shm_plane"] = {"enabled": plane is not None,
                        "frames": plane.frames if plane is not None else 0,
                        "standing_answers": plane.standing_answers if plane is not None else 0}
    # Its socket half (listeners/sock_plane.py): of those frames, the ones read from sockets.
    sockets = getattr(getattr(getattr(broker, "data", None), "plane", None), "sockets", None)
    doc["socket_plane"] = {"enabled": sockets is not None,
                           "frames": sockets.frames if sockets is not None else 0,
                           "short_sends": sockets.short_sends if sockets is not None else 0}
    # The parked loop (listeners/shm_park.py): ring wake-ups and socket reads served in C with
    # no Python turn (started by the first shm link or granted socket connection).
    park = getattr(getattr(getattr(broker, "data", None), "plane", None), "park", None)
    doc["shm_plane"]["park"] = park.stats() if park is not None else None
    doc["records_out"] = stats.records_out
    doc["bytes_out"] = stats.bytes_out
    doc["fsync_count"] = stats.fsync_count
    doc["fsync_avg_ms"] = round(1000 * stats.fsync_sum / stats.fsync_count, 3) \
        if stats.fsync_count else None
    # The Kafka listeners and their connections (null when kafka.enabled is false).
    kl = getattr(broker, "kafka_listeners", [])
    if kl:
        host, port = broker.kafka.advertised
        doc["kafka"] = {"listeners": [k.status() for k in kl], "advertised": f"{host}:{port}"}
    else:
        doc["kafka"] = None
    # The replica listener's address (the port it got when replica.listen asked for port 0).
    rl = getattr(broker, "replica_listener", None)
    doc["replica"] = {"listen": f"{rl.host}:{rl.port}"} if rl is not None else None
    # Likewise the HTTP listener's (a service on the loop, not an attribute of the broker).
    hl: Any = next((s for s in broker.loop.services if getattr(s, "name", None) == "http"), None)
    doc["http"] = {"listen": f"{hl.host}:{hl.port}"} if hl is not None else None
    # The metrics endpoint: serving, or down with the error that keeps it so (server/metrics.py).
    ms: Any = next((s for s in broker.loop.services if getattr(s, "name", None) == "metrics"), None)
    doc["metrics"] = ms.snapshot() if ms is not None else None
    # The last SIGHUP reload: applied or why not, and the changed settings only a restart applies.
    reloader: Any = next((s for s in broker.loop.services
                          if getattr(s, "name", None) == "reload"), None)
    doc["reload"] = reloader.status() if reloader is not None else None
    notifier = broker.notifier
    doc["systemd"] = {"notify": bool(getattr(notifier, "enabled", False)),
                      "watchdog_s": getattr(notifier, "watchdog_s", None)}
    return doc
