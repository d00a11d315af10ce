"""Instructions per send() of the C Sender (edgebus._onestep), split by function: what the split of
edgebus/onestep.c into several files (split29) must leave unchanged or lower.

    python -m bench.onestep_instructions [--sends 1000] [--rate 200] [--transports shm,socket]
                                         [--keep DIR]

A paced producer (linger_ms=0, 100-byte records, one partition) runs under valgrind's callgrind
collecting only inside send() (bench/producer_cost.py's `send-instructions`: the sending thread,
`--toggle-collect=_operator_call`). The whole count per send moves with how many
acknowledgements the send happened to take in (the reap of REAP_AT records in flight settles
them in this thread; the reader thread settles the rest, uncounted), so this reads the callgrind
file per function: for each function of the _onestep extension, its own instructions (self
cost, not its callees') and how often it was called. `onestep_Sender_vectorcall`'s (before the
split `Sender_vectorcall`) self cost per call is the Sender's own code per send, the figure the
split must keep; the walk and settling per call move with how many answers each call took.

Run it in two trees (main and a branch) alternately for an A/B: the figures are instruction
counts, which the machine's load hardly moves.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import tempfile

_FN = re.compile(r"^(c?)(fn|ob)=\((\d+)\)(?: (.*))?$")


class Profile:
    """A callgrind output file's instructions per function (events: Ir only): `self_ir[fn]` its
    own (not its callees'), `obj[fn]` its object file, `calls[fn]` how often it was called,
    `edges[fn][callee]` the instructions of fn's calls to callee, callee's callees included."""

    def __init__(self, path: str) -> None:
        names: dict[str, dict[str, str]] = {"fn": {}, "ob": {}}
        self.self_ir: collections.Counter[str] = collections.Counter()
        self.obj: dict[str, str] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self.edges: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.edge_calls: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter)
        fn = ob = cfn = cob = ""
        in_call = False
        with open(path, errors="replace") as f:
            for line in f:
                line = line.rstrip("\n")
                m = _FN.match(line)
                if m:  # name compression: "(id) name" the first time, "(id)" after
                    called, kind, ident, name = m.groups()
                    if name is not None:
                        names[kind][ident] = name
                    value = names[kind].get(ident, ident)
                    if kind == "ob":
                        if called:
                            cob = value
                        else:
                            ob = cob = value
                    elif called:
                        cfn = value
                    else:
                        fn = value
                        self.obj[fn] = ob
                    continue
                if line.startswith("calls="):
                    self.calls[cfn] += int(line[6:].split()[0])
                    self.edge_calls[fn][cfn] += int(line[6:].split()[0])
                    self.obj.setdefault(cfn, cob)
                    in_call = True
                    continue
                if line[:1].isdigit() or line[:1] in "+-*":  # "position cost"
                    parts = line.split()
                    if len(parts) >= 2:
                        if in_call:  # the cost of the call just named: inclusive
                            self.edges[fn][cfn] += int(parts[1])
                        else:
                            self.self_ir[fn] += int(parts[1])
                    in_call = False
                elif line.startswith("fl=") or line.startswith("fi=") or line.startswith("fe="):
                    cob = ob


def own(prof: Profile, fn: str, ext: dict[str, int], seen: frozenset[str] = frozenset()) -> float:
    """Instructions of the extension's own code that fn's calls ran: its own, and for each
    function of the extension it calls, that function's own per call (its own and its callees'
    in the extension, averaged over all its callers) times the calls fn made. Not the C API's:
    only what the split could change."""
    total = float(ext.get(fn, 0))
    for callee, n in prof.edge_calls[fn].items():
        if callee in ext and callee not in seen and callee != fn and prof.calls[callee]:
            total += own(prof, callee, ext, seen | {fn}) * n / prof.calls[callee]
    return total


# What the Sender calls that is not its own work: the reap at REAP_AT records in flight
# (`sock_reap`; on the rings `ch.reap`, its only method call), which settles however many
# answers have come, and the hand-overs to Python (`one_class` for a new partition,
# `Producer._send_held` for a record that must wait, `send_rest`: PyObject_CallFunction;
# `Producer.send` itself: a vectorcall of a Python function).
REAP = ("onestep_sock_reap", "PyObject_VectorcallMethod")
PYTHON = ("_PyObject_CallFunction_SizeT", "PyObject_CallFunction", "_PyFunction_Vectorcall",
          "PyObject_Vectorcall")


def report(path: str, sends: int, label: str) -> None:
    """Print one callgrind file's figures per send (module docstring)."""
    prof = Profile(path)
    ext = {fn: ir for fn, ir in prof.self_ir.items() if "_onestep" in prof.obj.get(fn, "")}
    sender = next(fn for fn in ext if fn.endswith("Sender_vectorcall"))
    edges = prof.edges[sender]
    reap = sum(ir for callee, ir in edges.items() if callee in REAP)
    python = sum(ir for callee, ir in edges.items() if callee in PYTHON)
    handed = sum(prof.calls[c] for c in PYTHON if c in edges)
    send = prof.self_ir[sender] + sum(edges.values())
    total = sum(prof.self_ir.values())
    # Its own code: a helper's instructions shared out by its callers' calls (callgrind counts
    # the warm-up's calls too, collection off, but in the same proportion for every caller).
    print(f"{label:6} the Sender's own code (extension functions only, reap excluded) "
          f"{own(prof, sender, {k: v for k, v in ext.items() if not k.endswith(REAP[0])}) / sends:,.1f}"
          f"/send")
    print(f"{label:6} in send() {total / sends:,.0f}/send; the Sender's C path "
          f"{(send - reap - python) / sends:,.1f}/send (with the C API calls it makes; without "
          f"its reap, {reap / sends:,.1f}/send, and its calls of Python, {python / sends:,.1f}/send"
          f" in {handed} calls); its own function {ext[sender] / sends:,.1f}/send; all of "
          f"_onestep's own code {sum(ext.values()) / sends:,.1f}/send")
    for fn, ir in sorted(ext.items(), key=lambda kv: -kv[1]):
        print(f"    {fn:28} self {ir / sends:8,.1f}/send  ({prof.calls[fn]} calls counted)")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.onestep_instructions",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--sends", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--transports", default="shm,socket")
    ap.add_argument("--keep", help="a directory to keep the callgrind files in")
    ap.add_argument("--read", help="only read the files a run kept there (--keep), for --sends")
    a = ap.parse_args(argv)
    if a.read:
        for tr in a.transports.split(","):
            report(os.path.join(a.read, f"callgrind.send.{tr}"), a.sends, tr)
        return
    import subprocess

    import edgebus
    from bench.producer_cost import run_send_instructions
    from edgebus import Admin
    from edgebus.testing import EmbeddedBroker
    root = os.path.dirname(os.path.dirname(edgebus.__file__))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=root).stdout.strip()
    print(f"# C Sender instructions per send: {a.sends} sends at {a.rate:g}/s, 100 B, "
          f"linger_ms=0; {root} at {commit}; load {os.getloadavg()[0]:.2f}")
    out_dir = a.keep or tempfile.mkdtemp(prefix="eb-onestep-")
    os.makedirs(out_dir, exist_ok=True)
    with EmbeddedBroker() as b:
        with Admin(socket=b.socket) as adm:
            adm.create_topic("cost", partitions=1)
        for tr in a.transports.split(","):
            run_send_instructions(b.socket, tr, a.rate, a.sends, out_dir)
            report(os.path.join(out_dir, f"callgrind.send.{tr}"), a.sends, tr)


if __name__ == "__main__":
    main()
