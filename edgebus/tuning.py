"""Tuning constants and environment knobs, each defined once: its default, why, how it is read.

The bottom layer: it imports nothing from edgebus but the error tree, so any module may use it.
Every knob is read once, when this module is imported (the hot paths read plain module
constants); a value that does not parse raises `ConfigError` naming the variable, at import,
rather than being ignored. `KNOBS` lists them all (README.md, "Environment variables", shows the
same table; tests/client/test_tuning.py checks the two agree).

Who reads what: the clients (edgebus/client/), the "is a CPU free" check (edgebus/shm/) and the
supervisor's shared-memory listener (edgebus/server/listeners/shm.py) read their values from
here; edgebus/paths.py reads the location variables (their defaults depend on the user, so they
are computed there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from edgebus.errors import ConfigError


@dataclass(frozen=True)
class Knob:
    """One environment variable: its name, default (as written in the environment), meaning."""

    name: str
    default: str
    meaning: str


KNOBS: list[Knob] = []


def _knob(name: str, default: str, meaning: str) -> str:
    KNOBS.append(Knob(name, default, meaning))
    value = os.environ.get(name, "")
    return value.strip() or default


def _int(name: str, raw: str, lo: int, hi: int) -> int:
    try:
        n = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not lo <= n <= hi:
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {n}")
    return n


def _flag(name: str, raw: str) -> bool:
    if raw not in ("0", "1"):
        raise ConfigError(f"{name} must be 0 or 1, got {raw!r}")
    return raw == "1"


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
    return raw


def _flag_knob(name: str, default: str, meaning: str) -> bool:
    """A 0/1 knob: listed in KNOBS, read and checked once."""
    return _flag(name, _knob(name, default, meaning))


def _int_knob(name: str, default: str, meaning: str, lo: int, hi: int) -> int:
    """A whole-number knob in [lo, hi]: listed in KNOBS, read and checked once."""
    return _int(name, _knob(name, default, meaning), lo, hi)


# --- locations (read by edgebus/paths.py, whose defaults depend on the user) ------------------
ENV_SOCKET = "EDGEBUS_SOCKET"
ENV_DATA_DIR = "EDGEBUS_DATA_DIR"
ENV_CONFIG = "EDGEBUS_CONFIG"
KNOBS += [
    Knob(ENV_SOCKET, "", "the supervisor's socket (default: per user, or /run/edgebus/edgebus.sock for root)"),
    Knob(ENV_DATA_DIR, "", "the data directory (default: per user, or /var/lib/edgebus for root)"),
    Knob(ENV_CONFIG, "", "the configuration file (default: /etc/edgebus/edgebus.yaml if present)"),
]
# Clients trust a socket served by their own user, root or `edgebus` (edgebus/peercred.py); a
# supervisor run by anyone else must be named here. Read at each connect.
ENV_SUPERVISOR_USER = "EDGEBUS_SUPERVISOR_USER"
KNOBS.append(Knob(ENV_SUPERVISOR_USER, "", "a user (name or uid) whose supervisor clients also "
                  "trust, beside their own user, root and edgebus"))

# --- transport choice (clients) ----------------------------------------------------------------
TRANSPORTS = ("auto", "shm", "socket")
# A deployment or a test run can force one transport for every client without code changes; it
# applies to clients created with transport="auto" (the default). Read at each client's creation
# (check_transport), not at import: a test may set it for one run.
ENV_TRANSPORT = "EDGEBUS_TRANSPORT"
KNOBS.append(Knob(ENV_TRANSPORT, "auto", "the transport of clients created with "
                  "transport=\"auto\": auto (rings when available), shm or socket"))


def check_transport(transport: str) -> str:
    """The transport to use: "auto" defers to $EDGEBUS_TRANSPORT when that is set."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}; got {transport!r}")
    if transport == "auto":
        return _choice(ENV_TRANSPORT, os.environ.get(ENV_TRANSPORT, "").strip() or "auto", TRANSPORTS)
    return transport


# --- shared-memory waiting (clients) -----------------------------------------------------------
_MAX_US = 10_000_000  # no spin or lazy wait longer than 10 s makes sense; a typo would hang
# Spin this long for a response or for room before sleeping on the eventfd (a consumer waiting
# for its fetch answer, an Admin call). Spinning trades CPU for latency while traffic flows.
SPIN_NS = _int_knob(
    "EDGEBUS_SHM_SPIN_US", "200", "microseconds a client spins on its ring before sleeping "
    "(also the supervisor's, unless EDGEBUS_SHM_SERVER_SPIN_US is set)", 0, _MAX_US) * 1000
# A producer's acknowledgement reader spins less: nobody waits on it in a hurry, and on a small
# machine its spinning takes the core the supervisor or a consumer needs.
ACK_SPIN_NS = min(SPIN_NS, 20_000)
# Adaptive spinning (edgebus/shm/spin.py): a reader spins for its next frame only while frames
# have been arriving closer together than this on average, i.e. when the next one is likely to
# come before a sleep and wake-up (tens of microseconds of CPU) would be over. SPIN_NS and
# SERVER_SPIN_NS stay the upper bounds of one spin.
SPIN_GAP_NS = _int_knob(
    "EDGEBUS_SHM_SPIN_GAP_US", "50", "a ring reader (supervisor or client) spins only while its "
    "frames arrive on average closer together than this many microseconds (0: never spin)",
    0, _MAX_US) * 1000
# Lazy acknowledgements (shm: ShmAsyncChannel; socket: edgebus/client/socket_acks.py): while a
# producer sends steadily and nobody waits on a result, its reader is not woken per response
# (each wake-up costs the supervisor an eventfd write, on shm, and the producer a thread
# wake-up, together about as much as handling the record): the producer takes
# the acknowledgements that came at its next send, and the reader sleeps unsignalled until
# ACK_LAZY_GAPS average send gaps after the last send (at least ACK_LAZY_S, at most STEADY_S),
# then collects what is left. Anyone who waits (a future's get(), flush(), a full buffer) calls
# hurry(), and the reader is then woken per response for URGENT_S. 0 turns laziness off.
ACK_LAZY_S = _int_knob(
    "EDGEBUS_SHM_ACK_LAZY_US", "1000", "microseconds (at least) a steadily sending producer's "
    "reader sleeps unsignalled after its last send, acknowledgements being taken at the next "
    "send; 0 turns this off", 0, _MAX_US) / 1e6
# Sixteen gaps: four times the unanswered requests at which a one-record send takes the
# acknowledgements itself (REAP_AT, edgebus/client/fast_send.py), so the sends take them in bulk
# before the reader's timer ends: at 1,000 sends a second it wakes about once per 16 ms of steady
# sending, and the last ones of a burst wait at most that long (STEADY_S at most) for a callback
# when nobody waits on them.
ACK_LAZY_GAPS = 16
URGENT_S = 0.1
# "Sends steadily": the last request went out less than this long ago; an idle producer's reader
# sleeps until signalled, so it costs nothing.
STEADY_S = 0.02
# Spin only while traffic flows: when the previous response came less than this long ago. An
# idle long-polling consumer then sleeps at once instead of spinning before every long poll.
RECENT_NS = 2_000_000
# Fetch-ahead for consumers (edgebus/client/fetch_ahead.py).
FETCH_AHEAD = _flag_knob(
    "EDGEBUS_SHM_FETCH_AHEAD", "1", "1: a consumer on the rings sends its likely next fetch "
    "ahead; 0 turns this off")
# ... as a standing fetch (FETCH_STANDING: re-armed by the supervisor after each answer, so the
# consumer does not wake it with a new fetch per answer; edgebus/server/handlers/standing.py),
# on the rings and on the Unix socket.
STANDING = _flag_knob(
    "EDGEBUS_SHM_STANDING_FETCH", "1", "1: the fetch a consumer sends ahead (rings or Unix "
    "socket) stays armed at the supervisor after each answer; 0: one fetch per answer")
# ... answered at once while the consumer has left at most this many bytes of answers unread (or
# the last answer, if larger); more, and the fetch is held until it reads, what came meanwhile
# then going as one answer (handlers/standing.py caught_up). A hold costs the supervisor two
# Python turns and both sides a wake-up (the consumer's read signals the supervisor, whose
# answer signals the consumer): at 10,000 records a second a consumer two answers behind (a
# window of one answer, before tail28) had 1-2% of its records held, the p99's band
# (bench/results/issue16-tail28.md). 16 KiB: a consumer ~14 one-KiB answers behind (1.4 ms at
# 10,000/s) still reads them in one poll without either wake-up; one that stops reading still
# costs at most this plus one answer.
STANDING_WINDOW = _int_knob(
    "EDGEBUS_SHM_STANDING_WINDOW", "16384", "bytes of standing-fetch answers a ring consumer may "
    "leave unread and still get the next one at once (more: held until it reads); 0: only the "
    "last answer", 0, 1 << 30)
# A consumer's standing-fetch answer taken in one C call (edgebus/shm/take.c: the wait, the
# copy out of the ring or the socket's recv, the frame's header) and its records unpacked from the
# buffer it was taken into (edgebus/client/quick_take.py). 0: the Python path takes every answer.
C_TAKE = _flag_knob(
    "EDGEBUS_CONSUMER_C_TAKE", "1", "1: a consumer waits for and takes each standing-fetch "
    "answer in one C call (when the C module is built); 0: in Python")
# A producer's one-record send() made by one C call (edgebus/onestep.c, edgebus/client/c_send.py)
# instead of Producer.send's Python when it can be; 0: always in Python.
C_SEND = _flag_knob(
    "EDGEBUS_PRODUCER_C_SEND", "1", "1: a producer's one-record send() runs in C when the C "
    "extension is built and nothing needs the Python path; 0: always in Python")
# Default data bytes per ring; a producer asks for more when its max_request_size needs it.
DEFAULT_RING_BYTES = 4 * 1024 * 1024

# --- "is a CPU free?" for spinning (edgebus/shm, both sides) -----------------------------------
# Spinning only pays when the spinner has a core to itself; /proc/loadavg is read at most every
# CPU_CHECK_NS per process (about 10 us each time).
CPU_CHECK = _flag_knob(
    "EDGEBUS_SHM_CPU_CHECK", "1", "1: spin only while no more tasks are runnable than CPUs; "
    "0 spins whenever traffic flows")
CPU_CHECK_NS = 10_000_000
# The supervisor's C data plane (edgebus/server/listeners/shm_plane.py): a ring's plain
# PRODUCEs to partitions the link holds a grant for are appended and answered by one C call per
# wake-up. On when the C module edgebus.shm._plane is built; 0 serves every frame in Python.
C_PLANE = _flag_knob(
    "EDGEBUS_SHM_C_PLANE", "1", "1: the supervisor appends and answers a ring's plain PRODUCEs "
    "in one C call per wake-up (when its C module is built); 0: every frame in Python")
# The same for a Unix-socket connection's read (edgebus/server/listeners/sock_plane.py); off
# with the plane itself (EDGEBUS_SHM_C_PLANE=0) too.
SOCKET_C_PLANE = _flag_knob(
    "EDGEBUS_SOCKET_C_PLANE", "1", "1: the supervisor appends and answers the plain PRODUCEs a "
    "Unix-socket connection sends in one C call per read (when the C plane runs); 0: in Python")
# The parked loop (edgebus/server/listeners/shm_park.py, edgebus/shm/park.c): with the C data
# plane on, the loop waits for its next event in C and serves granted links' wake-ups and granted
# Unix-socket connections' reads there, returning to Python only for what needs it. 0: every
# wake-up and read takes the loop's Python turn.
C_PARK = _flag_knob(
    "EDGEBUS_SHM_C_PARK", "1", "1: with the C data plane on, the supervisor's loop waits in C "
    "and serves a ring's or a Unix socket's plain PRODUCEs there without a Python turn; 0: a "
    "Python turn per wake-up")

# --- the supervisor's shared-memory listener (edgebus/server/listeners/shm.py) --------------------
# Keep polling a link's ring for this long after its last frame before sleeping on its eventfd.
# Longer means lower latency under steady traffic and more CPU burnt per idle gap.
SERVER_SPIN_NS = _int_knob(
    "EDGEBUS_SHM_SERVER_SPIN_US", str(SPIN_NS // 1000), "microseconds the supervisor polls a "
    "ring after its last frame (default: EDGEBUS_SHM_SPIN_US)", 0, _MAX_US) * 1000
# "Traffic flows" on the supervisor's side: a link woken by its eventfd spins only if its previous
# frame came less than this long ago (an idle long-polling consumer costs one wake-up a request).
SERVER_RECENT_NS = 2_000_000
# One spin slice on the loop when nothing else is ready: the loop still looks at its sockets,
# timers and the fsync thread at least this often.
SERVER_SPIN_SLICE_NS = 50_000
# Ring reads per link per loop turn (each up to ring.READ_MAX_FRAMES frames): fairness.
SERVER_MAX_READS_PER_TURN = 4

# --- the C heap (edgebus/heap.py; the supervisor and every client process) -----------------------
# Free memory glibc keeps at the top of the heap instead of giving it back to the kernel, so the
# next batch-sized buffer reuses pages instead of faulting them in again. 0 leaves glibc's
# defaults (which give back anything above 128 KiB, or twice the largest mmapped block seen).
HEAP_KEEP_MIB = _int_knob(
    "EDGEBUS_HEAP_KEEP_MIB", "8", "MiB of freed C heap a process keeps for reuse instead of "
    "returning it to the kernel at once (0: glibc's defaults)", 0, 64)

# --- the supervisor's garbage collector (edgebus/server/gcpolicy.py) -----------------------------
# Once listening, the supervisor freezes its start-up heap (gc.freeze) so that full collections on
# the event loop walk only what traffic made since (issue 16: tail latency).
GC_FREEZE = _flag_knob(
    "EDGEBUS_GC_FREEZE", "1", "1: the supervisor freezes its start-up heap once it listens, "
    "out of every later garbage collection; 0 leaves it in them")

# --- test hooks (edgebus/server/testhooks.py; never in production) ----------------------------
KNOBS += [
    Knob("EDGEBUS_TEST_HOOKS", "0", "test only: 1 makes SIGUSR2 block the event loop"),
    Knob("EDGEBUS_TEST_BLOCK_S", "3", "test only: seconds SIGUSR2 blocks the loop"),
]

