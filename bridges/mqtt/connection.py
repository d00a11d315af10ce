"""One paho-mqtt 2.x client, driven by the bridge's own network thread.

Why not paho's loop_start(): the bridge needs (1) reconnection with exponential backoff *and
jitter* (paho's own has none), (2) a way to stop reading from the broker when too much is held in
memory, and (3) a *connection generation* so that an acknowledgement is never sent on a connection
other than the one its message arrived on. So one thread here calls connect() and loop() itself,
and other threads only queue packets: `on_socket_register_write` is set, which makes paho queue
every outgoing packet (acks, publishes) for this thread to write instead of writing from the
caller's thread, so two threads never write to the socket at once.

Invariant (acks and generations): `generation` grows by one before every connection attempt, under
`_gen_lock`; ack(gen, ...) sends only while holding that lock and only if `gen` is current. An ack
queued on a connection that then dies is discarded by paho's reconnect(); an ack for a message of an
earlier connection is never sent, because in a resumed session the broker may already have reused
that packet id for another message, which the stale ack would then acknowledge before it is stored.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridges.mqtt import routes as R
from bridges.mqtt.config import MqttSettings, read_password
from bridges.mqtt.metrics import Metrics
from bridges.mqtt.subscriptions import Subscriptions
from edgebus.backoff import MAX_DOUBLINGS, backoff_delay

log = logging.getLogger("edgebus.bridge.mqtt")

# How long one loop() may wait in select(): bounds the reaction time to stop() and to a pause.
LOOP_TIMEOUT = 0.1


class MqttConnection:
    def __init__(
        self,
        settings: MqttSettings,
        metrics: Metrics,
        on_message: Callable[[mqtt.MQTTMessage, int, bool], None],
        subscriptions: list[tuple[str, int]],
        can_read: Callable[[], bool] = lambda: True,
        on_published: Callable[[int, str | None], None] | None = None,
        on_connected: Callable[[int, bool], None] | None = None,
        session_file: Path | None = None,
        router: R.Router | None = None,
    ) -> None:
        self.s = settings
        self.metrics = metrics
        self.v5 = settings.protocol == "5"
        self._on_message_cb = on_message
        self._on_published_cb = on_published
        self._on_connected_cb = on_connected
        self.subscriptions = subscriptions
        self.subs = Subscriptions(subscriptions, self.v5, session_file,
                                  f"{settings.host}:{settings.port}/{settings.client_id}", router)
        self._sub_mids: dict[int, list[str]] = {}    # SUBSCRIBE mid -> its filters
        self._unsub_mids: dict[int, list[str]] = {}  # UNSUBSCRIBE mid -> its filters
        self._can_read = can_read
        self._gen_lock = threading.Lock()
        self.generation = 0
        self.session_present = False
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._resume = threading.Event()  # set when the window may have room again
        self._thread: threading.Thread | None = None
        self._rng = random.Random()
        self.refused_credentials = False  # the last CONNACK said bad credentials / not authorized
        self._socket_error = ""  # paho's last error log line (a failed read: a TLS alert)
        # The last failure to connect that was logged: a broker that stays unreachable (the
        # uplink down for days) gets one line per change of error, not one per retry.
        self._logged_connect_error = ""
        self.client = self._make_client()

    # --- setup -----------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self.s
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=s.client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            # A persistent session: the broker queues QoS 1 messages while the bridge is away.
            clean_session=None if self.v5 else False,
            manual_ack=True, reconnect_on_failure=False)
        c.connect_timeout = s.connect_timeout_ms / 1000
        c.suppress_exceptions = True  # a bug in a callback must not kill the network thread
        if s.username is not None:
            c.username_pw_set(s.username, read_password(s))
        if s.tls is not None:
            t = s.tls
            c.tls_set(ca_certs=str(t.ca_file) if t.ca_file else None,
                      certfile=str(t.cert_file) if t.cert_file else None,
                      keyfile=str(t.key_file) if t.key_file else None,
                      cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            if t.insecure:
                c.tls_insecure_set(True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_log = self._on_log
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_unsubscribe
        c.on_publish = self._on_publish
        # External-loop hooks: paho then queues packets from other threads for ours to write.
        c.on_socket_register_write = _noop
        c.on_socket_unregister_write = _noop
        return c

    def _connect_properties(self) -> Properties | None:
        if not self.v5:
            return None
        p = Properties(PacketTypes.CONNECT)
        p.SessionExpiryInterval = self.s.session_expiry_ms // 1000
        p.ReceiveMaximum = self.s.receive_maximum
        return p

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt-network", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect (the session stays on the broker) and end the network thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self.connected.wait(timeout)

    # --- the network thread ----------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        s = self.s
        while not self._stop.is_set():
            if not self._can_read():
                # Too much held: do not (re)connect until the bridge catches up.
                self.metrics.set("mqtt_read_paused", 1)
                self._stop.wait(LOOP_TIMEOUT)
                continue
            self.metrics.set("mqtt_read_paused", 0)
            with self._gen_lock:
                self.generation += 1
            try:
                kwargs: dict[str, Any] = {}
                if self.v5:
                    kwargs = {"clean_start": False, "properties": self._connect_properties()}
                self.client.connect(s.host, s.port, keepalive=max(1, s.keepalive_ms // 1000),
                                    **kwargs)
            except (OSError, ssl.SSLError, ValueError) as e:
                self.metrics.inc("mqtt_connect_failures")
                hint = _tls_hint(e, s)
                self.metrics.error(f"cannot connect to MQTT broker {s.host}:{s.port}: {e}{hint}")
                if f"{e}{hint}" != self._logged_connect_error:
                    log.warning("cannot connect to %s:%d: %s%s (retrying; logged again when the "
                                "error changes)", s.host, s.port, e, hint)
                    self._logged_connect_error = f"{e}{hint}"
                # A certificate that is not trusted stays so: retry at the slowest pace, not in
                # a storm that starts at reconnect_min_ms.
                self._stop.wait(backoff_delay(MAX_DOUBLINGS if hint else attempt,
                                              s.reconnect_min_ms / 1000,
                                              s.reconnect_max_ms / 1000, self._rng))
                attempt += 1
                continue
            self.refused_credentials = False
            self._socket_error = ""
            if self._logged_connect_error:
                log.info("connected to %s:%d again", s.host, s.port)
                self._logged_connect_error = ""
            if self._serve():
                attempt = 0  # the connection was accepted: start the backoff afresh
            elif not self._stop.is_set() and not self.refused_credentials:
                self._closed_before_connack()
            if self._stop.is_set():
                break
            # Wrong credentials stay wrong until someone changes them: the slowest pace too.
            self._stop.wait(backoff_delay(MAX_DOUBLINGS if self.refused_credentials else attempt,
                                          s.reconnect_min_ms / 1000,
                                          s.reconnect_max_ms / 1000, self._rng))
            attempt += 1
        self._shutdown()

    def _closed_before_connack(self) -> None:
        """The broker closed the connection without a CONNACK: with TLS 1.3 a client
        certificate it requires and refused shows only here (the handshake completed on our
        side), so say so, and retry at the slowest pace (as for any failure retrying cannot fix)."""
        s = self.s
        why = self._socket_error or "closed by the broker"
        hint = ""
        if "certificate" in why.lower():
            self.refused_credentials = True
            hint = (" (the broker refused this client's TLS certificate or wants one: set "
                    "mqtt.tls.cert_file and key_file to a certificate its CA signed; retrying "
                    "every reconnect_max_ms)")
        self.metrics.inc("mqtt_connect_failures")
        self.metrics.error(f"the MQTT broker {s.host}:{s.port} closed the connection before "
                           f"accepting it: {why}{hint}")
        log.warning("the MQTT broker %s:%d closed the connection before accepting it: %s%s",
                    s.host, s.port, why, hint)

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, buf: str) -> None:
        # paho reports a failed socket read (a TLS alert) only through its log.
        if level == mqtt.MQTT_LOG_ERR:
            self._socket_error = buf

    def _serve(self) -> bool:
        """Run one connection until it is lost or stop() is called; True if it was accepted.

        While paused (the window full) nothing is read: Mosquitto 2.0.11 does not keep to the
        Receive Maximum (each PUBACK lets it send a whole window more), so the messages it sends
        beyond stay in the socket, not in the bridge's memory. paho then reads no PINGRESP
        either, and drops the connection ("Keep alive timeout") a keepalive after its PINGREQ:
        a pause longer than about two keepalives (the supervisor down) ends the connection, and
        the bridge connects again only once it can read; the broker sends the unacknowledged
        messages again, and the bridge matches them to the records it holds (window.py)."""
        accepted = False
        paused = False
        try:
            while not self._stop.is_set():
                if self._can_read():
                    if paused:
                        paused = False
                        self.metrics.set("mqtt_read_paused", 0)
                    rc = self.client.loop(LOOP_TIMEOUT)
                else:
                    if not paused:
                        paused = True
                        self.metrics.inc("mqtt_read_pauses")
                        self.metrics.set("mqtt_read_paused", 1)
                        log.debug("in-flight window full (or stopping): reading from MQTT paused")
                    # Write (acks) and keep alive, but read nothing: the broker's window fills.
                    self._resume.wait(LOOP_TIMEOUT)
                    self._resume.clear()
                    rc = self.client.loop_write() if self.client.want_write() else MQTTErrorCode(0)
                    if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                        rc = self.client.loop_misc()
                accepted = accepted or self.connected.is_set()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        finally:  # _run does not connect again while it cannot read: still paused then
            self.metrics.set("mqtt_read_paused", 0 if self._can_read() else 1)
        return accepted

    def _shutdown(self) -> None:
        c = self.client
        if self.connected.is_set():
            c.disconnect()
            deadline = time.monotonic() + 2.0
            while c.want_write() and time.monotonic() < deadline:
                if c.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        self.connected.clear()
        self.metrics.set("mqtt_connected", 0)
        with contextlib.suppress(Exception):  # the socket may be gone already
            c.loop(0)  # lets paho close the socket after DISCONNECT

    # --- paho callbacks (network thread) ---------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self.metrics.inc("mqtt_connect_failures")
            hint = ""
            if getattr(reason, "value", None) in _CREDENTIAL_CODES:
                self.refused_credentials = True
                hint = (" (check mqtt.username and mqtt.password / password_file, or the client "
                        "certificate in mqtt.tls; retrying every reconnect_max_ms)")
            self.metrics.error(f"the MQTT broker refused the connection: {reason}{hint}")
            log.error("the MQTT broker refused the connection: %s%s", reason, hint)
            return
        self.session_present = bool(flags.session_present)
        self.connected.set()
        self.metrics.inc("mqtt_connects")
        self.metrics.set("mqtt_connected", 1)
        log.info("connected to %s:%d (generation %d, session present: %s)", self.s.host,
                 self.s.port, self.generation, self.session_present)
        if self._on_connected_cb is not None:
            self._on_connected_cb(self.generation, self.session_present)
        self._subscribe(client)

    def _subscribe(self, client: mqtt.Client) -> None:
        """Subscribe to the configured filters and, in a resumed session, unsubscribe the ones
        no longer configured (subscriptions.py)."""
        stale = self.subs.connected(self.session_present)
        self._sub_mids.clear()
        self._unsub_mids.clear()
        for topic, props, filters in self.subs.requests():
            rc, mid = client.subscribe(topic, properties=props)
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                self._sub_mids[mid] = filters
        if stale:
            log.info("unsubscribing from filter(s) no longer configured, kept by the broker's "
                     "session: %s", ", ".join(repr(f) for f in stale))
            rc, mid = client.unsubscribe(stale)
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                self._unsub_mids[mid] = stale

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[Any],
                      properties: Any) -> None:
        filters = self._sub_mids.pop(mid, [])
        for filt in self.subs.acknowledged(filters, [rc.is_failure for rc in reasons]):
            rc = reasons[filters.index(filt)]
            self.metrics.error(f"the broker refused the subscription to {filt!r}: {rc}")
            log.error("the broker refused the subscription to %r: %s", filt, rc)

    def _on_unsubscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                        properties: Any) -> None:
        filters = self._unsub_mids.pop(mid, [])
        if filters:
            self.subs.unsubscribed(filters)
            log.info("unsubscribed from %s", ", ".join(repr(f) for f in filters))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if self.connected.is_set():
            self.metrics.inc("mqtt_disconnects")
            level = logging.INFO if self._stop.is_set() else logging.WARNING
            log.log(level, "disconnected from the MQTT broker: %s", reason)
        self.connected.clear()
        self.metrics.set("mqtt_connected", 0)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._on_message_cb(msg, self.generation, self.session_present)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        if self._on_published_cb is None:
            return
        failure = str(reason) if getattr(reason, "is_failure", False) else None
        self._on_published_cb(mid, failure)

    # --- used by other threads -------------------------------------------------------------------
    def wake(self) -> None:
        """The window has room again (acks were queued): end a read pause now."""
        self._resume.set()

    def ack(self, generation: int, mid: int, qos: int) -> bool:
        """PUBACK `mid` if it arrived on the current connection; False if that is gone."""
        with self._gen_lock:
            if generation != self.generation or not self.connected.is_set():
                return False
            self.client.ack(mid, qos)
            return True

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool,
                user_properties: list[tuple[str, str]] | None = None) -> int:
        """Queue a publish; paho keeps QoS 1/2 messages across reconnects until acknowledged.
        Returns the message id (on_published(mid, failure) follows)."""
        props = None
        if self.v5 and user_properties:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = user_properties
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise OSError(f"paho refused the publish to {topic!r}: {mqtt.error_string(info.rc)}")
        return info.mid


def _noop(*_args: Any) -> None:
    return None


# CONNACK reason codes (MQTT 5; paho maps 3.1.1's 4 and 5 onto them) that retrying cannot fix.
_CREDENTIAL_CODES = frozenset({134, 135})  # bad user name or password; not authorized


def _tls_hint(e: BaseException, s: Any) -> str:
    """What to check when the TLS handshake failed for a reason retrying cannot fix ("" else)."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return (f" (the broker's certificate is not trusted by mqtt.tls.ca_file "
                f"{s.tls.ca_file if s.tls is not None and s.tls.ca_file else '(system CAs)'}, "
                "or does not name the host; retrying every reconnect_max_ms)")
    if isinstance(e, ssl.SSLError) and "certificate" in str(e).lower():
        return (" (the broker refused the client certificate: check mqtt.tls.cert_file and "
                "key_file; retrying every reconnect_max_ms)")
    return ""
