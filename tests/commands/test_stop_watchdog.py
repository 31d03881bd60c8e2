"""The stop watchdog with real signals sent to this process: the first asks the run to
stop on its loop; a run that does not finish in its grace gets the emergency close; an
emergency close that blocks, or one more signal, gets the hard exit. Callbacks here are
recorders, so nothing exits."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from app.stop_watchdog import StopWatchdog

pytestmark = pytest.mark.timeout(30)


class Calls:
    def __init__(self, block_emergency: bool = False) -> None:
        self.stop: list[int] = []
        self.emergency: list[int] = []
        self.hard: list[int] = []
        self.block = threading.Event() if block_emergency else None
        self.hard_seen = threading.Event()
        self.emergency_seen = threading.Event()

    def on_stop(self, sig: int) -> None:
        self.stop.append(sig)

    def on_emergency(self, sig: int) -> None:
        self.emergency.append(sig)
        self.emergency_seen.set()
        if self.block is not None:
            self.block.wait(10)  # an fsync that does not return

    def on_hard_exit(self, sig: int) -> None:
        self.hard.append(sig)
        self.hard_seen.set()


async def _scenario(calls: Calls, *, finish_after_s: float | None, signals: int = 1,
                    wait_s: float = 1.0) -> None:
    dog = StopWatchdog(calls.on_stop, calls.on_emergency, calls.on_hard_exit, grace_s=0.3,
                       emergency_budget_s=0.2)
    dog.install(asyncio.get_running_loop())
    try:
        for _ in range(signals):
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.05)
        if finish_after_s is not None:
            await asyncio.sleep(finish_after_s)
            dog.finished()
        await asyncio.sleep(wait_s)
    finally:
        dog.uninstall()


def test_a_run_that_stops_in_time_gets_no_emergency() -> None:
    calls = Calls()
    asyncio.run(_scenario(calls, finish_after_s=0.05))
    assert calls.stop == [signal.SIGTERM]  # delivered on the loop
    assert calls.emergency == [] and calls.hard == []


def test_a_run_that_does_not_stop_gets_the_emergency_close() -> None:
    calls = Calls()
    t0 = time.monotonic()
    asyncio.run(_scenario(calls, finish_after_s=None, wait_s=0.6))
    assert calls.stop == [signal.SIGTERM]
    assert calls.emergency == [signal.SIGTERM] and calls.hard == []
    assert time.monotonic() - t0 < 5


def test_an_emergency_close_that_blocks_gets_the_hard_exit() -> None:
    calls = Calls(block_emergency=True)
    asyncio.run(_scenario(calls, finish_after_s=None, wait_s=0.8))
    assert calls.emergency == [signal.SIGTERM]
    assert calls.hard == [signal.SIGTERM]
    assert calls.block is not None
    calls.block.set()


def test_a_second_signal_closes_at_once_and_a_third_leaves() -> None:
    calls = Calls(block_emergency=True)
    asyncio.run(_scenario(calls, finish_after_s=None, signals=3, wait_s=0.0))
    # Well inside the grace: the second signal started the emergency close; it blocks,
    # so the hard exit follows (its budget, or the third signal, whichever comes first).
    assert calls.emergency_seen.wait(2) and calls.hard_seen.wait(2)
    assert calls.stop == [signal.SIGTERM] and calls.emergency == [signal.SIGTERM]
    assert calls.block is not None
    calls.block.set()


def test_signals_are_given_back_after_uninstall() -> None:
    before = signal.getsignal(signal.SIGTERM)
    asyncio.run(_scenario(Calls(), finish_after_s=0.01, wait_s=0.0))
    assert signal.getsignal(signal.SIGTERM) is before
