"""The teapot, processed with faust-streaming on edgebus's Kafka listener: a table of the last
reading per kettle, kept by an agent that reads `teapot.temperature`. The table lives in memory
and in its changelog, a compacted topic in edgebus (`teapot-last-last-reading-changelog`); a
restarted app (even after a SIGKILL) gets it back from there before it reads on.

    python examples/teapot/faust_last.py [--broker 127.0.0.1:9092]

On a fresh quickstart it makes `teapot.temperature` (one partition) if it is not there yet, and
uses as many partitions as that topic has.

It prints the table as one JSON line (`faust_last: {...}`) whenever it changed: once recovered
at start, and after new readings. Readings are what the MQTT bridge lands
in `teapot.temperature` (examples/teapot/bridge.yaml): the kettle's id as key, JSON with
`celsius`. faust is an ordinary Kafka client library here: nothing in it knows edgebus; its own
partition assignor runs in its leader member (docs/KAFKA.md, "Consumer groups").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

SOURCE = "teapot.temperature"


async def source_partitions(broker: str, create_with: int) -> int:
    """The partition count of the readings topic, made with `create_with` partitions if it is
    missing (on a fresh quickstart): faust makes only its own topics, and a table's changelog
    must have as many partitions as the topic its agent reads."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(SOURCE, create_with, 1)])  # "exists" is no error here
        (desc,) = await admin.describe_topics([SOURCE])
        return len(desc["partitions"])
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--broker", default="127.0.0.1:9092", help="edgebus's Kafka listener")
    ap.add_argument("--app-id", default="teapot-last", help="faust's app id (its group id)")
    ap.add_argument("--partitions", type=int, default=1,
                    help="partitions of teapot.temperature if it must be made")
    ap.add_argument("--data-dir", default=None, help="faust's data directory (default: a temp one)")
    args = ap.parse_args(argv)

    try:
        import faust
    except ImportError:
        print("faust_last: needs faust-streaming: .venv/bin/pip install faust-streaming",
              file=sys.stderr)
        return 2
    import tempfile

    partitions = asyncio.run(source_partitions(args.broker, args.partitions))
    app = faust.App(
        args.app_id, broker=f"kafka://{args.broker}", store="memory://",
        datadir=args.data_dir or tempfile.mkdtemp(prefix="faust-last-"),
        topic_partitions=partitions, topic_replication_factor=1, web_enabled=False,
        # Commit often: a restarted app then reads few readings twice.
        broker_commit_every=10, broker_commit_interval=0.5,
    )
    readings = app.topic(SOURCE, key_type=str, value_type=bytes, value_serializer="raw",
                         partitions=partitions)
    last = app.Table("last-reading", default=None, partitions=partitions)
    shown: dict[str, Any] = {}

    @app.agent(readings)
    async def track(stream: Any) -> None:
        async for kettle, raw in stream.items():
            try:
                celsius = float(json.loads(raw)["celsius"])
            except (ValueError, KeyError, TypeError):
                continue  # not a reading: the bridge's schema check makes this rare
            last[kettle] = celsius

    def table() -> dict[str, Any]:
        return {k: v for k, v in sorted(last.items())}

    @app.timer(interval=0.2)
    async def show() -> None:
        now = table()
        if now != shown:
            # Straight to fd 1: a faust worker sends print()'s stdout into its logger.
            os.write(1, f"faust_last: {json.dumps(now)}\n".encode())
            shown.clear()
            shown.update(now)

    # --without-web: the worker's command line would switch faust's web server back on (a fixed
    # port, 6066, on every address), whatever the app's web_enabled says.
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
