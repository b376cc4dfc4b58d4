"""Signals on a thread of their own (`bridge.util.signals`), and what `run` makes of them:
a stop is final, a reload gives the next bridge a fresh stop event."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from bridge.cli.run import _Asked

ROOT = Path(__file__).resolve().parents[1]


def test_a_sighup_after_a_stop_does_not_turn_it_into_a_restart() -> None:
    asked = _Asked()
    asked.received(signal.SIGTERM)
    asked.received(signal.SIGHUP)
    assert asked.stop.is_set() and not asked.reload.is_set()
    assert asked.next_bridge() is False


def test_a_reload_gives_the_next_bridge_a_fresh_stop_event_that_a_stop_then_sets() -> None:
    asked = _Asked()
    asked.received(signal.SIGHUP)
    first = asked.stop
    assert first.is_set() and asked.reload.is_set()
    assert asked.next_bridge() is True
    assert asked.stop is not first and not asked.stop.is_set() and not asked.reload.is_set()
    asked.received(signal.SIGINT)
    assert asked.stop.is_set() and asked.next_bridge() is False


def test_a_stop_after_a_reload_request_wins() -> None:
    asked = _Asked()
    asked.received(signal.SIGHUP)
    asked.received(signal.SIGTERM)
    assert not asked.reload.is_set()  # the bridge publishes offline
    assert asked.next_bridge() is False


def test_a_failing_handler_does_not_deafen_the_process_to_the_next_signal() -> None:
    """In a process of its own (the wakeup socket is process-wide): the first SIGTERM's
    handler raises, the second is still handled; the main thread waits without a timeout."""
    script = textwrap.dedent("""
        import os, signal, threading
        from bridge.util.signals import handle_signals
        calls, done = [], threading.Event()
        def on_signal(signum):
            calls.append(signum)
            if len(calls) == 1:
                os.kill(os.getpid(), signal.SIGTERM)  # the next one, while this one fails
                raise RuntimeError("a bug in the handler")
            done.set()
        handle_signals(on_signal, (signal.SIGTERM,))
        os.kill(os.getpid(), signal.SIGTERM)
        done.wait()
        print("handled", len(calls))
    """)
    done = subprocess.run([sys.executable, "-c", script], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "handled 2"
    assert "handling signal 15 failed" in done.stderr and "a bug in the handler" in done.stderr
