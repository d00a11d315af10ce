"""The loop's descriptor watcher: select.epoll with a callback per descriptor (issue 16).

The selectors module's EpollSelector costs the supervisor, per wake-up, a Python generator of
SelectorKey tuples, a dict lookup and a mask conversion per ready descriptor and a timeout
rounding call, around the one epoll_wait that matters: about a tenth of the Python a paced
message's wake-up runs outside its request handler. `Poller` keeps the part of the selectors
API the supervisor's parts use (register, modify, unregister, close: the same signatures and
EVENT_READ/EVENT_WRITE masks, KeyError for an unknown descriptor) and lets the loop call
`epoll.poll` itself (Loop.run): ready descriptors come back as (fd, epoll events), and `mask`
turns the events into the selectors mask the callbacks take. Loop thread only.
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import Callable
from selectors import EVENT_READ, EVENT_WRITE
from typing import Any

Callback = Callable[[int], None]

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT


def _fd(fileobj: Any) -> int:
    fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
    if fd < 0:
        raise ValueError(f"invalid file descriptor: {fd}")
    return int(fd)


def _epoll_events(events: int) -> int:
    if events & ~(EVENT_READ | EVENT_WRITE):
        raise ValueError(f"invalid events: {events!r}")
    return (_IN if events & EVENT_READ else 0) | (_OUT if events & EVENT_WRITE else 0)


def mask(ev: int) -> int:
    """The selectors mask for epoll events `ev`, as EpollSelector gives it (an error or a hang-up
    reports both, so the callback finds out on its next read or write)."""
    m = 0
    if ev & ~_IN:
        m |= EVENT_WRITE
    if ev & ~_OUT:
        m |= EVENT_READ
    return m


class Poller:
    """Descriptors, their events and callbacks, on one epoll object."""

    def __init__(self) -> None:
        self.ep = select.epoll()
        self.callbacks: dict[int, Callback] = {}  # fd -> callback(mask), read by Loop.run
        self._events: dict[int, int] = {}  # fd -> selectors events registered
        self._objs: dict[int, Any] = {}  # fd -> what was registered (to unregister it closed)

    def register(self, fileobj: Any, events: int, data: Callback) -> None:
        fd = _fd(fileobj)
        if fd in self.callbacks:
            raise KeyError(f"{fileobj!r} (fd {fd}) is already registered")
        if not events:
            raise ValueError("no events to watch")
        self.ep.register(fd, _epoll_events(events))
        self.callbacks[fd] = data
        self._events[fd] = events
        self._objs[fd] = fileobj

    def modify(self, fileobj: Any, events: int, data: Callback) -> None:
        fd = _fd(fileobj)
        if fd not in self.callbacks:
            raise KeyError(f"{fileobj!r} (fd {fd}) is not registered")
        if events != self._events[fd]:
            self.ep.modify(fd, _epoll_events(events))  # 0: watched for nothing, still registered
            self._events[fd] = events
        self.callbacks[fd] = data

    def edge(self, fd: int) -> None:
        """Make a registered descriptor's read interest edge-triggered (LoopApi.register_edge)."""
        self.ep.modify(fd, _IN | select.EPOLLET)
        self._events[fd] = EVENT_READ

    def unregister(self, fileobj: Any) -> None:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        if fd < 0:  # a socket closed first: as selectors does, find it by the object
            fd = next((k for k, o in self._objs.items() if o is fileobj), -1)
        if self.callbacks.pop(fd, None) is None:
            raise KeyError(f"{fileobj!r} (fd {fd}) is not registered")
        del self._events[fd]
        del self._objs[fd]
        with contextlib.suppress(OSError):  # closed first: the kernel dropped it already
            self.ep.unregister(fd)

    def close(self) -> None:
        self.ep.close()
        self.callbacks.clear()
        self._events.clear()
        self._objs.clear()
