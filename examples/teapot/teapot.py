"""A simulated teapot: publishes its water temperature to kitchen/teapot/<id>/temperature every
--interval-ms (QoS 1), and obeys kitchen/teapot/<id>/command ("off" stops the heating).

    python3 teapot.py --port 1883 --id pot-1
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
except ImportError as e:  # a python3 outside the checkout's venv: say what to do, no traceback
    raise SystemExit(f"teapot: {e}: run it with the checkout's .venv/bin/python (or `. "
                     ".venv/bin/activate` first; ./scripts/quickstart setup makes it)") from None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--id", default="pot-1")
    ap.add_argument("--interval-ms", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60.0, help="stop after this long")
    ap.add_argument("--keep-reporting", action="store_true",
                    help="once switched off, keep reporting (cooling) until --seconds instead of "
                         "stopping at 90 C")
    args = ap.parse_args()

    state = {"celsius": 18.0, "heating": True}
    off = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"teapot-{args.id}",
                         protocol=mqtt.MQTTv5)
    command_topic = f"kitchen/teapot/{args.id}/command"

    def on_connect(c: mqtt.Client, *_: object) -> None:
        c.subscribe(command_topic, qos=1)

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        cmd = msg.payload.decode(errors="replace").strip()
        print(f"teapot {args.id}: command {cmd!r} at {state['celsius']:.0f} C", flush=True)
        if cmd == "off":
            state["heating"] = False
            off.set()
        elif cmd == "on":
            state["heating"] = True

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(args.host, args.port)
    client.loop_start()
    topic = f"kitchen/teapot/{args.id}/temperature"
    deadline = time.monotonic() + args.seconds
    seq = 0
    while time.monotonic() < deadline:
        if state["heating"]:
            state["celsius"] = min(100.0, state["celsius"] + 7.5)
        else:
            state["celsius"] = max(18.0, state["celsius"] - 2.5)
        reading = {"id": args.id, "seq": seq, "celsius": state["celsius"],
                   "heating": state["heating"]}
        client.publish(topic, json.dumps(reading), qos=1)
        print(f"teapot {args.id}: {state['celsius']:5.1f} C "
              f"{'heating' if state['heating'] else 'cooling'}", flush=True)
        seq += 1
        if off.is_set() and state["celsius"] <= 90 and not args.keep_reporting:
            break  # the demo has shown what it wanted: switched off, cooling down
        time.sleep(args.interval_ms / 1000)
    client.loop_stop()
    client.disconnect()
    return 0 if off.is_set() else 1


if __name__ == "__main__":
    sys.exit(main())
