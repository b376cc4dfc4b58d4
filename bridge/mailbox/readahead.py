"""Run an iterator in a thread, one item ahead of its consumer.

The part-wise fetch uses it to have the next window of messages fetched from IMAP while
the current one is summarised and published: the IMAP round trips (the server's work, the
socket reads, TLS) then overlap with the summaries instead of adding to them. The producer
holds the GIL only while it parses; it waits on the socket without it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

_T = TypeVar("_T")
_END = object()  # the producer's last item when it ran out or stopped; a _Failure is too


class ReadAhead(Generic[_T]):
    """Iterate over `produce()` in a thread named `name`, at most `depth` items ahead.

    An exception of the producer is raised in the consumer, where the item would have
    been. `close()` (also on leaving a `with` block) asks the producer to stop via `stop`,
    which it must check between its steps, and waits for it to finish: afterwards nothing
    the producer used (an IMAP connection) is in use any more.
    """

    def __init__(self, produce: Callable[[], Iterator[_T]], *, name: str, depth: int = 1,
                 stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._ended = False  # the producer's last item was taken: it put nothing after it
        self._thread = threading.Thread(target=self._run, args=(produce,), name=name,
                                        daemon=True)
        self._thread.start()

    def _run(self, produce: Callable[[], Iterator[_T]]) -> None:
        try:
            for item in produce():
                self._queue.put(item)
                if self.stop.is_set():
                    break
        except BaseException as exc:  # handed to the consumer, which raises it
            self._queue.put(_Failure(exc))
        else:
            self._queue.put(_END)

    def _take(self) -> object:
        item = self._queue.get()
        self._ended = item is _END or isinstance(item, _Failure)
        return item

    def __iter__(self) -> Iterator[_T]:
        while not self._ended:
            item = self._take()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]

    def close(self) -> None:
        self.stop.set()
        # Every item taken makes room for a producer blocked on a full queue; its last
        # item comes once it has noticed the stop (or ran out, or failed).
        while not self._ended:
            self._take()
        self._thread.join()

    def __enter__(self) -> ReadAhead[_T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
