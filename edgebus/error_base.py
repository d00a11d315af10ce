"""The root of edgebus's one error tree (edgebus/errors.py has the tree and its codes)."""

from __future__ import annotations

from typing import ClassVar


class EdgebusError(Exception):
    """Base of every edgebus error."""

    code: ClassVar[int] = 1
    retriable: ClassVar[bool] = False
    hint: ClassVar[str] = ""

    def __str__(self) -> str:
        msg = super().__str__()
        if self.hint and self.hint not in msg:
            return f"{msg} (hint: {self.hint})" if msg else self.hint
        return msg
