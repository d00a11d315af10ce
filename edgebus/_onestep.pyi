"""Types of edgebus._onestep (edgebus/onestep.c): a producer's one-record send() in C."""

from collections.abc import Callable
from typing import Any

class Sender:
    def __init__(self, producer: Any, py_send: Callable[..., Any], one_class: Callable[..., Any],
                 handles: Callable[[Any], Any], send_rest: Callable[..., None],
                 future_type: type, mutex: Any, io_lock: Any, ring_produce: int,
                 sock_produce: int, limits: tuple[Any, ...]) -> None: ...
    def __call__(self, topic: str, value: Any = ..., key: Any = ..., headers: Any = ...,
                 partition: int | None = ..., timestamp_ms: int | None = ...) -> Any: ...
    def counts(self) -> tuple[int, int]: ...

def configure(py_deliver: Callable[[Any, Any, bool], tuple[int, int]], one_send_type: type,
              run_callbacks: Callable[[Any, Any, Any], None], batch_header_size: int) -> None: ...
def deliver(ch: Any, buf: Any, whole: bool) -> tuple[int, int]: ...
