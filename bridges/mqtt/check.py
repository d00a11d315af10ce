"""What `edgebus bridge mqtt --check` says besides "valid": the size limits a message meets on
its way through the bridge, and warnings about ingress filters that overlap. No I/O."""

from __future__ import annotations

from bridges.mqtt import filters
from bridges.mqtt.config import HEADER_ALLOWANCE, MAX_BATCH_BYTES, BridgeConfig, ValidateSettings

# The supervisor's default topic_defaults.max_message_bytes (edgebus/config.py): a bridge batch
# larger than a topic's max_message_bytes is refused. Named here because bridges may not import
# the supervisor's config module's internals; the README says the same.
SUPERVISOR_DEFAULT_MAX_MESSAGE = 1024 * 1024


def human(n: int) -> str:
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if n >= size and n % (size // 4 if size > 1024 else 1) == 0:
            v = n / size
            return f"{v:g} {unit}"
    return f"{n} bytes"


def limits(c: BridgeConfig) -> list[str]:
    """One line per limit, naming the key that sets it."""
    batch = c.edgebus.max_batch_bytes
    out = [
        f"a record (payload plus headers) is at most edgebus.max_batch_bytes = {human(batch)}; "
        f"no payload above {human(MAX_BATCH_BYTES - HEADER_ALLOWANCE)} can pass the bridge "
        f"(max_batch_bytes at most {human(MAX_BATCH_BYTES)}, less {human(HEADER_ALLOWANCE)} "
        "kept for headers)",
    ]
    for i, r in enumerate(c.ingress):
        v = r.validate or ValidateSettings()
        out.append(f"ingress[{i}] {r.filter!r}: payloads up to validate.max_bytes = "
                   f"{human(v.max_bytes)} go to {r.topic!r}; larger ones are dead-lettered")
    dl = c.dead_letter.max_payload_bytes
    whole = human(batch - HEADER_ALLOWANCE) if dl is None else human(min(dl, batch))
    out.append(f"dead letters keep the whole payload up to about {whole} "
               f"({'dead_letter.max_payload_bytes' if dl is not None else 'what fits in one record'}"
               "); a longer one is cut and its header edgebus.dlq.truncated gives the original "
               "size")
    out.append(f"each edgebus topic also refuses batches above its max_message_bytes "
               f"({human(SUPERVISOR_DEFAULT_MAX_MESSAGE)} by default), and the MQTT broker "
               "above its own limit (Mosquitto: message_size_limit)")
    return out


def warnings(c: BridgeConfig) -> list[str]:
    """Overlapping ingress filters: what happens to a message matching more than one."""
    out = []
    v5 = c.mqtt.protocol == "5"
    routes = list(c.ingress)
    hidden = filters.shadowed([r.filter for r in routes])
    for j, i in hidden.items():
        out.append(f"ingress[{i}] {routes[i].filter!r} and ingress[{j}] {routes[j].filter!r} "
                   f"overlap: ingress[{j}] never gets a message (ingress[{i}], declared first, "
                   "matches every topic it matches), so the bridge does not subscribe to it; "
                   "move it first if it should win")
    for j, b in enumerate(routes):
        for i in range(j):
            a = routes[i]
            if i in hidden or j in hidden or not filters.filters_overlap(a.filter, b.filter):
                continue
            pair = f"ingress[{i}] {a.filter!r} and ingress[{j}] {b.filter!r} overlap"
            if v5:
                out.append(f"{pair}: a message matching both is recorded once, to ingress[{i}] "
                           "(the first declared wins; README, 'Overlapping filters')")
            else:
                out.append(f"{pair}: with MQTT 3.1.1 the broker delivers a message matching "
                           "both twice and the copies cannot be told apart, so it is recorded "
                           "twice; use mqtt.protocol 5 or filters that do not overlap")
    return out
