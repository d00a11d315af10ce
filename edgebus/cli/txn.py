"""`edgebus txn list`: the producer ids, epochs and transactions the supervisor holds."""

from __future__ import annotations

import argparse
import json
from typing import Any

from edgebus.cli.common import add_socket_option, print_table, socket_path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("txn", help="transactions and idempotent producers the supervisor holds")
    tsub = p.add_subparsers(dest="txn_command", metavar="COMMAND", required=True)
    ls = tsub.add_parser(
        "list", help="transactional ids, their producer, epoch and open transaction",
        description="Each transactional id with its producer id and epoch, the state of its "
                    "transaction, how long it has been open against its timeout (a transaction "
                    "open longer is aborted), the partitions it wrote (from which offset) and the "
                    "groups whose offsets it commits; then the idempotent producers' last "
                    "sequence per partition (partitions written since the supervisor started).")
    ls.add_argument("--json", action="store_true", help="print one JSON document")
    ls.set_defaults(func=list_transactions)
    add_socket_option(ls)


def _as_json(r: Any) -> dict[str, Any]:
    return {
        "transactions": [
            {"transactional_id": t.transactional_id, "producer_id": t.producer_id,
             "epoch": t.producer_epoch, "state": t.state, "timeout_ms": t.timeout_ms,
             "open_ms": None if t.open_ms < 0 else t.open_ms,
             "partitions": [{"topic": p.topic, "partition": p.partition,
                             "first_offset": None if p.first_offset < 0 else p.first_offset}
                            for p in t.partitions],
             "groups": list(t.groups)}
            for t in r.transactions],
        "producers": [{"topic": p.topic, "partition": p.partition, "producer_id": p.producer_id,
                       "epoch": p.producer_epoch, "last_sequence": p.last_sequence}
                      for p in r.producers]}


def _part(p: Any) -> str:
    return f"{p.topic}-{p.partition}@{p.first_offset if p.first_offset >= 0 else '-'}"


def list_transactions(args: argparse.Namespace) -> int:
    from edgebus import Admin

    with Admin(socket=socket_path(args)) as admin:
        r = admin.list_transactions()
    if args.json:
        print(json.dumps(_as_json(r), indent=2))
        return 0
    print_table(["TRANSACTIONAL ID", "PRODUCER", "EPOCH", "STATE", "OPEN MS", "TIMEOUT MS",
                 "PARTITIONS (FROM OFFSET)", "GROUPS"],
                [(t.transactional_id, t.producer_id, t.producer_epoch, t.state,
                  "-" if t.open_ms < 0 else t.open_ms, t.timeout_ms,
                  ", ".join(_part(p) for p in t.partitions) or "-", ", ".join(t.groups) or "-")
                 for t in r.transactions])
    print()
    print_table(["TOPIC", "PARTITION", "PRODUCER", "EPOCH", "LAST SEQUENCE"],
                [(p.topic, p.partition, p.producer_id, p.producer_epoch, p.last_sequence)
                 for p in r.producers])
    return 0
