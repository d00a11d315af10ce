"""The teapot, processed with Quix Streams on edgebus's Kafka listener: each kettle's maximum
water temperature per minute (a tumbling window, state in RocksDB, its changelog a compacted topic
in edgebus) into `teapot.max-per-minute`, and an `off` command into `teapot.commands` for a kettle
whose maximum reached the boil; the MQTT bridge sends that command back to the kettle.

    python examples/teapot/quix_max.py [--broker 127.0.0.1:9092] [--guarantee at-least-once]

Readings are what the MQTT bridge lands in `teapot.temperature`: the key is the kettle's id and
the value JSON with `celsius` (examples/teapot/bridge.yaml). Quix Streams is an ordinary Kafka
client library here: it talks to the supervisor's Kafka listener (docs/KAFKA.md), nothing in it
knows edgebus.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--broker", default="127.0.0.1:9092", help="edgebus's Kafka listener")
    ap.add_argument("--guarantee", default="at-least-once",
                    choices=("at-least-once", "exactly-once"))
    ap.add_argument("--window-ms", type=int, default=60_000, help="the tumbling window's length")
    ap.add_argument("--boil", type=float, default=100.0, help="celsius that means 'switch off'")
    ap.add_argument("--state-dir", default="state", help="RocksDB state (Quix's state_dir)")
    ap.add_argument("--group", default="teapot-max")
    ap.add_argument("--commit-interval", type=float, default=5.0, help="seconds between commits")
    args = ap.parse_args(argv)

    try:
        from quixstreams import Application
    except ImportError:
        print("quix_max: needs Quix Streams: .venv/bin/pip install quixstreams", file=sys.stderr)
        return 2

    # Exactly-once: a transactional id that stays the same across restarts, so a restarted app
    # fences its killed predecessor at once (and the transaction it left open is aborted then,
    # not only after transaction.timeout.ms, which Quix would otherwise make random).
    producer_config = ({"transactional.id": f"{args.group}-txn", "transaction.timeout.ms": 15_000}
                       if args.guarantee == "exactly-once" else {})
    app = Application(broker_address=args.broker, consumer_group=args.group,
                      auto_offset_reset="earliest", processing_guarantee=args.guarantee,
                      state_dir=args.state_dir, loglevel="WARNING",
                      commit_interval=args.commit_interval, producer_extra_config=producer_config)
    readings = app.topic("teapot.temperature", key_deserializer="str",
                         value_deserializer="json")
    maxima = app.topic("teapot.max-per-minute", key_serializer="str", value_serializer="json")
    commands = app.topic("teapot.commands", key_serializer="str", value_serializer="str")

    sdf = app.dataframe(readings)
    sdf = sdf.filter(lambda v: isinstance(v, dict) and isinstance(v.get("celsius"), int | float))
    sdf = sdf.apply(lambda v: float(v["celsius"]))
    sdf = sdf.tumbling_window(timedelta(milliseconds=args.window_ms)).max().final()

    def result(w: dict[str, Any]) -> dict[str, Any]:
        return {"start_ms": w["start"], "end_ms": w["end"], "max_celsius": w["value"]}

    sdf = sdf.apply(result)
    sdf = sdf.update(lambda w: print(f"quix_max: {w}", flush=True))
    sdf.to_topic(maxima)
    alerts = sdf.filter(lambda w: w["max_celsius"] >= args.boil)
    alerts = alerts.apply(lambda w: "off")
    alerts.to_topic(commands)
    print(f"quix_max: reading teapot.temperature at {args.broker} ({args.guarantee})", flush=True)
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
