"""What the bridge subscribes to, and what the broker's persistent session still holds.

A persistent session keeps every subscription the bridge ever made until it is unsubscribed, and
MQTT has no request that lists them: a route removed from the config would go on delivering (and
doubling) messages for as long as the session lives. So the bridge remembers, in the *session
file*, which filters the session may hold (`maybe`: subscribed or being subscribed) and which the
broker confirmed (`granted`); when a session resumes (session present) it unsubscribes every
remembered filter that is no longer configured. The file is written before a SUBSCRIBE is sent
(a crash then leaves the filter remembered) and after each SUBACK/UNSUBACK. It names the broker
and client id it is about; a file about another one is ignored. `granted` also tells the router
(routes.Router) which subscriptions surely deliver every message of the resumed session.

With MQTT 5, each filter is subscribed in its own SUBSCRIBE, carrying its subscription
identifier (routes.subscription_ids). A filter shadowed by an earlier one that matches every
topic it matches is not subscribed at all (filters.shadowed): it could never win.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridges.mqtt import filters
from bridges.mqtt import routes as R
from bridges.mqtt.metrics import MAX_STATUS_BYTES, write_status

log = logging.getLogger("edgebus.bridge.mqtt")

FORMAT_VERSION = 1


@dataclass
class SessionState:
    broker: str
    granted: set[str] = field(default_factory=set)
    maybe: set[str] = field(default_factory=set)
    known: bool = False  # the file described this session (a filter not in `maybe` is not in it)


def load_session(path: Path | None, broker: str) -> SessionState:
    """What the file says about `broker`'s session; empty if there is none (or it is about
    another broker or client id, or unreadable: then nothing is known, which costs at most
    duplicates and stale subscriptions, never a loss)."""
    state = SessionState(broker)
    if path is None:
        return state
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(MAX_STATUS_BYTES))
    except FileNotFoundError:
        return state
    except (OSError, ValueError) as e:
        log.warning("cannot read the session file %s (%s): stale subscriptions are not "
                    "removed this time", path, e)
        return state
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION \
            or doc.get("broker") != broker:
        return state
    state.granted = {f for f in doc.get("granted", []) if isinstance(f, str)}
    state.maybe = {f for f in doc.get("maybe", []) if isinstance(f, str)} | state.granted
    state.known = True
    return state


class Subscriptions:
    """The subscription plan and the session file. Network thread only."""

    def __init__(self, subscriptions: list[tuple[str, int]], v5: bool, path: Path | None,
                 broker: str, router: R.Router | None = None) -> None:
        hidden = filters.shadowed([f for f, _ in subscriptions])
        self.active = [(f, q) for i, (f, q) in enumerate(subscriptions) if i not in hidden]
        for j in hidden:
            log.info("not subscribing to %r: an earlier route matches every topic it matches",
                     subscriptions[j][0])
        self.v5 = v5
        self.path = path
        self.router = router
        self.ids = router.ids if router is not None else filters.subscription_ids(
            [f for f, _ in subscriptions])
        self.state = SessionState(broker)
        self._write_error: str | None = None

    def connected(self, session_present: bool) -> list[str]:
        """A connection was accepted: the filters to unsubscribe (no longer configured).
        Remembers the ones about to be subscribed before anything is sent."""
        old = load_session(self.path, self.state.broker) if session_present \
            else SessionState(self.state.broker)
        wanted = {f for f, _ in self.active}
        stale = sorted(old.maybe - wanted)
        if self.router is not None:
            if not session_present:
                fresh = wanted
            elif old.known:
                fresh = wanted - old.maybe
            else:
                fresh = set()
            self.router.new_session(old.granted, fresh)
        self.state = SessionState(old.broker, old.granted & wanted, old.maybe | wanted)
        self.save()
        return stale

    def requests(self) -> list[tuple[Any, Any, list[str]]]:
        """(topic argument, properties, filters) of each SUBSCRIBE to send."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        from paho.mqtt.subscribeoptions import SubscribeOptions

        if not self.v5:
            return [(list(self.active), None, [f for f, _ in self.active])] if self.active else []
        out = []
        for filt, qos in self.active:
            shared = filt.startswith("$share/")
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = self.ids[filt]
            # Retained messages again only for a new subscription (not on every reconnect), and
            # not our own egress publishes (noLocal; not allowed on shared subscriptions).
            opts = SubscribeOptions(qos=qos, noLocal=not shared,
                                    retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
            out.append(((filt, opts), props, [filt]))
        return out

    def acknowledged(self, filters: list[str], failures: list[bool]) -> list[str]:
        """A SUBACK: the filters the broker refused (kept in `maybe`, to be unsubscribed)."""
        refused = []
        for filt, failed in zip(filters, failures, strict=False):
            if failed:
                refused.append(filt)
                self.state.granted.discard(filt)
                if self.router is not None:
                    self.router.refused(filt)
            else:
                self.state.granted.add(filt)
        self.save()
        return refused

    def unsubscribed(self, filters: list[str]) -> None:
        for filt in filters:
            self.state.granted.discard(filt)
            self.state.maybe.discard(filt)
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        doc = {"version": FORMAT_VERSION, "broker": self.state.broker,
               "granted": sorted(self.state.granted), "maybe": sorted(self.state.maybe)}
        try:
            write_status(self.path, doc)
        except OSError as e:
            error = f"{type(e).__name__}: {e.strerror or e}"
            if error != self._write_error:  # once, not at every SUBACK
                log.warning("cannot write the session file %s: %s; subscriptions removed from "
                            "the config may stay in the broker's session", self.path, error)
            self._write_error = error
            # An older file would claim to know this session: better no file at all.
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            return
        self._write_error = None
