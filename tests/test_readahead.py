"""ReadAhead: a producer thread one item ahead, its errors and its shutdown."""

from __future__ import annotations

import itertools
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


def closing(ahead: ReadAhead[int]) -> threading.Thread:
    """close() in a thread of its own, so that a close that never returns fails the test."""
    closer = threading.Thread(target=ahead.close, name="ra-closer", daemon=True)
    closer.start()
    return closer


def test_close_makes_room_for_a_producer_blocked_on_a_full_queue() -> None:
    """The consumer stopped mid-way (the broker went away) while the producer, which does
    not check `stop` itself, waits to put an item into the full queue: close() makes room,
    the producer notices the stop after that item, and close() returns with it joined."""
    produced: list[int] = []

    def produce() -> Iterator[int]:
        for i in itertools.count():
            produced.append(i)
            yield i

    ahead = ReadAhead(produce, name="ra-full", depth=1)
    assert next(iter(ahead)) == 0
    deadline = time.monotonic() + 30  # item 1 waits in the queue, item 2 to be put
    while len(produced) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    closer = closing(ahead)
    closer.join(30)
    assert not closer.is_alive()
    assert not any(t.name == "ra-full" for t in threading.enumerate())
    assert produced == [0, 1, 2]


def test_close_waits_for_the_producer_s_step_in_hand() -> None:
    """A producer in mid-step (an IMAP round trip) is not abandoned: close() returns only
    once that step is over, so nothing the producer uses is still in use afterwards."""
    in_step, step_over = threading.Event(), threading.Event()
    steps: list[int] = []

    def produce() -> Iterator[int]:
        yield 0
        in_step.set()
        assert step_over.wait(30)
        steps.append(1)
        yield 1

    ahead = ReadAhead(produce, name="ra-busy", depth=1)
    assert next(iter(ahead)) == 0
    assert in_step.wait(30)
    closer = closing(ahead)
    deadline = time.monotonic() + 30
    while not ahead.stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closer.is_alive()  # the step is not over: it cannot have returned
    step_over.set()
    closer.join(30)
    assert not closer.is_alive() and steps == [1]
    assert not any(t.name == "ra-busy" for t in threading.enumerate())
