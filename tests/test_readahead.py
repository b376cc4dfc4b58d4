"""ReadAhead: a producer thread one item ahead, its errors and its shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from bridge.mailbox.readahead import ReadAhead


def test_items_arrive_in_order_and_the_thread_ends() -> None:
    with ReadAhead(lambda: iter(range(50)), name="ra-order") as ahead:
        assert list(ahead) == list(range(50))
    assert not any(t.name == "ra-order" for t in threading.enumerate())


def test_the_producer_runs_at_most_depth_items_ahead() -> None:
    produced: list[int] = []

    def produce() -> Iterator[int]:
        for i in range(10):
            produced.append(i)
            yield i

    with ReadAhead(produce, name="ra-depth", depth=1) as ahead:
        items = iter(ahead)
        assert next(items) == 0
        # item 1 waits in the queue, item 2 is made and waits to be put ...
        deadline = time.monotonic() + 30
        while len(produced) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert produced[:3] == [0, 1, 2]
        time.sleep(0.2)  # ... and no more, however long it is given
        assert produced == [0, 1, 2]


def test_a_producer_error_is_raised_where_its_item_would_be() -> None:
    def produce() -> Iterator[int]:
        yield 1
        raise ConnectionResetError("imap gone")

    with ReadAhead(produce, name="ra-error") as ahead:
        items = iter(ahead)
        assert next(items) == 1
        with pytest.raises(ConnectionResetError, match="imap gone"):
            next(items)


def test_close_stops_a_producer_that_checks_stop() -> None:
    """The consumer gives up early (the broker went away): close() returns once the
    producer has noticed, and the producer does no further step."""
    steps: list[int] = []
    stop = threading.Event()

    def produce() -> Iterator[int]:
        for i in range(1000):
            if stop.is_set():
                return
            steps.append(i)
            yield i

    ahead = ReadAhead(produce, name="ra-stop", stop=stop)
    assert next(iter(ahead)) == 0
    ahead.close()
    done = len(steps)
    time.sleep(0.1)
    assert len(steps) == done < 10
    assert not any(t.name == "ra-stop" for t in threading.enumerate())
