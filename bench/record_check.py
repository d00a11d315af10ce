"""What the supervisor's produce-time record check costs (issue 14, item 5), per batch.

    python -m bench.record_check [--rounds 5] [--records 1000]

`batch.check_records` walks every record of a batch (in C: lengths, header keys as UTF-8) so that
a batch whose records do not decode is refused instead of failing every reader of its partition.
This times it on a batch of `--records` records, two shapes (100-byte values without keys, the
producer's bulk shape; and keyed records with two headers each), against the supervisor's whole
per-batch produce path in the same run: decode the PRODUCE body, validate the batch (CRC),
check the records, append it to a real segment file (write(2), in a temporary directory), encode
the response. CPU microseconds per call, best of `--rounds` (bench/micro.py `cpu_per_call`);
no socket or fsync, which only add to the path. Prints a table and writes
bench/results/record_check.json.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.micro import RESULTS, cpu_per_call, python_decoder, write_report
from edgebus import batch as B
from edgebus.fastpath.produce import decode_produce, encode_produce_response, produce_body
from edgebus.log import Partition, TopicConfig


def shapes(records: int) -> dict[str, bytes]:
    return {
        "100 B values, no key": B.build_batch(
            [B.encode_record(1, None, b"x" * 100, ()) for _ in range(records)], 1, 1),
        "16 B key, 100 B value, 2 headers": B.build_batch(
            [B.encode_record(1, b"k" * 16, b"x" * 100, [("source", b"dev-17"), ("unit", b"C")])
             for _ in range(records)], 1, 1),
    }


def produce_path(p: Partition, body: memoryview, check: bool) -> Callable[[], Any]:
    """The supervisor's per-batch work for one PRODUCE (handlers/data.py produce_fields)."""
    clock = [1_000]

    def run() -> bytes:
        fields = decode_produce(body)
        assert fields is not None
        topic, partition, _acks, batch = fields
        buf = bytearray(batch)  # the request buffer the loop owns; stamped in place
        info = B.validate_batch(buf)
        if check:
            B.check_records(buf, info)
        clock[0] += 1
        base, atime = p.append(buf, info, clock[0])
        return encode_produce_response(7, topic, partition, base, atime, p.log_start_offset)

    return run


def measure(rounds: int, records: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="eb-bench-") as tmp:
        # Retention by size keeps the temporary directory small however long the timing runs.
        cfg = TopicConfig(segment_bytes=16 * 1024 * 1024, retention_bytes=64 * 1024 * 1024)
        for name, batch in shapes(records).items():
            p = Partition.open(Path(tmp) / f"t{len(rows)}-0", "t", 0, cfg)
            info = B.validate_batch(batch)
            body = memoryview(produce_body("t", 0, 1, batch).payload)
            check = cpu_per_call(functools.partial(B.check_records, batch, info), rounds)
            with python_decoder():  # what the check costs without the C module
                python = cpu_per_call(functools.partial(B.check_records, batch, info), rounds)
            without = cpu_per_call(produce_path(p, body, False), rounds)
            with_check = cpu_per_call(produce_path(p, body, True), rounds)
            p.apply_retention(0)
            p.close()
            rows.append({
                "batch": f"{records} records, {name}", "batch_bytes": len(batch),
                "check_us": round(check, 2), "check_python_us": round(python, 1),
                "produce_path_us": round(without, 2), "produce_path_checked_us": round(with_check, 2),
                "check_share_of_path": round(check / with_check, 3),
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.record_check",
                                 description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    rows = measure(args.rounds, args.records)
    lines = ["| batch | bytes | check (C) us | check (Python) us | produce path us, without / with "
             "the check | check / checked path |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['batch']} | {r['batch_bytes']} | {r['check_us']} | {r['check_python_us']} | "
              f"{r['produce_path_us']} / {r['produce_path_checked_us']} | "
              f"{100 * r['check_share_of_path']:.1f} % |" for r in rows]
    print("\n".join(lines))
    write_report(args.out, "record_check.json", args.rounds, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
