"""The application: reads teapot temperatures from edgebus in a consumer group and, when a pot
boils while still heating, sends it an "off" command through edgebus (the bridge delivers it).

    python3 boil_detector.py [--socket PATH]
"""

from __future__ import annotations

import argparse
import json
import sys

try:
    from edgebus import Consumer, Producer
except ImportError as e:  # a python3 outside the checkout's venv: say what to do, no traceback
    raise SystemExit(f"boil_detector: {e}: run it with the checkout's .venv/bin/python (or `. "
                     ".venv/bin/activate` first; ./scripts/quickstart setup makes it)") from None

BOILING = 100.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", default=None, help="the supervisor's socket (default: usual)")
    ap.add_argument("--max-commands", type=int, default=0, help="exit after this many (0: never)")
    args = ap.parse_args()
    sent = 0
    with Consumer("teapot.temperature", group_id="boil-detector", socket=args.socket,
                  auto_offset_reset="earliest", enable_auto_commit=False) as consumer, \
            Producer(socket=args.socket, acks="durable") as producer:
        commanded: set[str] = set()
        while True:
            batches = consumer.poll(timeout_ms=500)
            for records in batches.values():
                for r in records:
                    reading = json.loads(r.value)
                    pot = r.key.decode()
                    if reading["celsius"] >= BOILING and reading["heating"]:
                        if pot not in commanded:
                            producer.send("teapot.commands", b"off", key=pot,
                                          headers=[("reason", b"boiling")]).get(10)
                            commanded.add(pot)
                            sent += 1
                            print(f"detector: {pot} boils at {reading['celsius']:.0f} C "
                                  "-> off", flush=True)
                    elif not reading["heating"]:
                        commanded.discard(pot)  # it obeyed; a later boil needs a new command
            if batches:
                consumer.commit()
            if args.max_commands and sent >= args.max_commands:
                return 0


if __name__ == "__main__":
    sys.exit(main())
