"""Per-call CPU of the hot paths: the generic code against the fast path that replaced it, in one run.

    python -m bench.micro [--rounds 5]

Each pair does the same work on the same input (tests check that the results are equal); the
figure is the best of `rounds` timings of CPU time per call, so other work on the machine moves
both sides alike. Prints a table and writes bench/results/micro.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgebus import batch as B
from edgebus import format as F
from edgebus.fastpath.fetch import encode_fetched_one, fetch_response
from edgebus.fastpath.produce import decode_produce, encode_produce_response, produce_body
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol, ResponseFrame

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_per_call(fn: Callable[[], Any], rounds: int, target_s: float = 0.05) -> float:
    """Best-of-rounds CPU microseconds per call of fn."""
    n = 1
    while True:  # calibrate: enough calls for target_s of CPU
        t0 = time.process_time()
        for _ in range(n):
            fn()
        if time.process_time() - t0 >= target_s / 5 or n >= 1 << 22:
            break
        n *= 4
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n)
    return best * 1e6


def _generic_response(corr: int, body: M.Message) -> bytes:
    out: list[bytes] = []
    type(body).encode(body, out)
    payload = b"".join(out)
    return F.RESPONSE_HEADER.pack(F.RESPONSE_HEADER_SIZE - 4 + len(payload), corr, 0) + payload


def _frame(data: bytes) -> ResponseFrame:
    p = ClientProtocol()
    p.receive_data(data)
    f = p.next_response()
    assert f is not None
    return f


@contextlib.contextmanager
def python_decoder() -> Iterator[None]:
    """Inside: edgebus/batch.py decodes with its specification code, not the C module (a private
    of the module, swapped through its namespace as tests' monkeypatch does)."""
    names = vars(B)
    fast, names["_fast"] = names["_fast"], None
    try:
        yield
    finally:
        names["_fast"] = fast


def _python_decode(batch: bytes) -> list[B.Record]:
    with python_decoder():
        return B.decode_batch(batch, "t", 0)


def cases() -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    one = B.build_batch([B.encode_record(1, None, b"x" * 100, ())], 1, 1)
    many = B.build_batch([B.encode_record(1, None, b"x" * 100, ()) for _ in range(1000)], 1, 1)
    req = M.ProduceRequest("sensors", 0, 1, one)
    req_body = memoryview(b"".join(_parts(req)))
    ack = M.ProduceResponse("sensors", 0, 123456, 1_700_000_000_000, 0)
    fetched = M.FetchResponse([M.FetchedPartition("sensors", 0, 0, "", 1000, 0, many)])
    fetched_frame = _frame(_generic_response(7, fetched))
    assert fetch_response(fetched_frame) == ClientProtocol.decode_body(M.Api.FETCH, fetched_frame)
    return [
        ("PRODUCE request encode (client)",
         lambda: ClientProtocol.encode_request(M.Api.PRODUCE, 7, req),
         lambda: ClientProtocol.encode_request(M.Api.PRODUCE, 7, produce_body("sensors", 0, 1, one))),
        ("PRODUCE request decode (supervisor)",
         lambda: M.ProduceRequest.from_bytes(req_body), lambda: decode_produce(req_body)),
        ("PRODUCE response encode (supervisor)",
         lambda: _generic_response(7, ack),
         lambda: encode_produce_response(7, "sensors", 0, 123456, 1_700_000_000_000, 0)),
        ("FETCH response encode, 1 partition (supervisor)",
         lambda: _generic_response(7, fetched),
         lambda: encode_fetched_one(7, "sensors", 0, 1000, 0, many)),
        ("FETCH response decode (consumer)",
         lambda: ClientProtocol.decode_body(M.Api.FETCH, fetched_frame), lambda: fetch_response(fetched_frame)),
        ("decode a batch of 1000 x 100 B records (consumer)",
         lambda: _python_decode(many), lambda: B.decode_batch(many, "t", 0)),
    ]


def _parts(msg: M.Message) -> list[bytes]:
    out: list[bytes] = []
    type(msg).encode(msg, out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    rows = []
    for name, generic, fast in cases():
        g, f = cpu_per_call(generic, args.rounds), cpu_per_call(fast, args.rounds)
        rows.append({"case": name, "generic_us": round(g, 3), "fast_us": round(f, 3), "ratio": round(g / f, 2)})
    lines = ["| case | generic us/call | fast path us/call | ratio |", "|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['generic_us']} | {r['fast_us']} | {r['ratio']}x |" for r in rows]
    print("\n".join(lines))
    write_report(args.out, "micro.json", args.rounds, rows)
    return 0


def write_report(out_dir: str | Path, name: str, rounds: int, rows: list[dict[str, Any]]) -> None:
    """rows, with the time, the Python and the machine, as JSON in out_dir/name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
              "machine": platform.machine(), "rounds": rounds, "results": rows}
    (out / name).write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {out}/{name}")


if __name__ == "__main__":
    raise SystemExit(main())
