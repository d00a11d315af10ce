"""Handlers made at their first request: the APIs an idle supervisor never serves (issue 16).

A supervisor that no peer replicates to never needs the replica handlers (handlers/replica.py),
one without idempotent or transactional producers never needs the transaction coordinator
(server/txn/, handlers/txn.py), nor what only they import (broker.py makes both this way).
`OnFirstUse` holds the recipe instead of the object; `install` puts one stub per API into the
dispatch table. The first request to any of them makes the object,
replaces every stub with the real bound method (later requests cost nothing extra) and is
handled by it. The cost of the first one is the import (a few milliseconds), once per process.

Loop thread only, like the dispatch table it edits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Handler = Callable[[Any, int, Any], Any]


class OnFirstUse(Generic[T]):
    def __init__(self, make: Callable[[], T]) -> None:
        self._make: Callable[[], T] | None = make
        self._obj: T | None = None
        self._tables: list[tuple[dict[int, Handler], Mapping[int, str]]] = []

    @property
    def made(self) -> T | None:
        """The object if a request made it already, else None."""
        return self._obj

    def get(self) -> T:
        """The object, made now if no request made it yet."""
        if self._obj is None:
            assert self._make is not None
            self._obj = self._make()
            self._make = None
            for table, names in self._tables:
                for api, name in names.items():
                    table[api] = getattr(self._obj, name)
        return self._obj

    def install(self, table: dict[int, Handler], names: Mapping[int, str]) -> None:
        """Put into `table` (API key -> handler) a stub for each API of `names` (API key ->
        method name) that makes the object at the first request and then hands over to it."""
        self._tables.append((table, dict(names)))
        for api, name in names.items():
            table[api] = self._stub(name)

    def _stub(self, name: str) -> Handler:
        def first(conn: Any, corr: int, body: Any) -> Any:
            return getattr(self.get(), name)(conn, corr, body)

        return first
