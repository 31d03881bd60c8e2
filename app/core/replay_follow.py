"""Follow a session another wattflow is still recording (`wattflow replay --follow`):
its events as the writer adds them, until the end record.

The lines are decoded by the session reader itself (`FollowedSession` is a
`SessionStream` whose line source waits at the end of the file for more), so a followed
session is checked exactly as a finished one is read, whatever its encoding.

A follower must never hang: if the file stops growing for `timeout_s` before the end
record comes, the writer is taken for dead and `FollowTimeout` says so (with an
incomplete last line, the session is flagged as cut, as a crashed run's is).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from app.core.bus import EventBus
from app.core.events import ErrorEvent, Event
from app.core.replay import Replayer
from app.core.session_reader import (
    MAX_LINE_BYTES,
    NOT_A_SESSION,
    SessionError,
    SessionStream,
)

#: Seconds without the file growing after which its writer is taken for dead. The
#: recorder flushes every 0.25 s and a live run writes samples every poll interval,
#: so a healthy run never pauses that long.
DEFAULT_TIMEOUT_S = 30.0

#: How often the file is looked at for more data.
POLL_S = 0.1

#: The first bytes of a zstandard file: a compressed session is written whole when the
#: run closes, so there is nothing to follow before.
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class FollowTimeout(SessionError):
    """The followed file stopped growing before its end record."""


def _first_line_ready(path: Path) -> bool:
    """Whether the file's first line (the header) is complete; SessionError when the
    file plainly is not a session being written."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError as e:
        raise SessionError(f"cannot read {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise SessionError(f"{path} is a directory, not a session file")
    if not stat.S_ISREG(mode):
        raise SessionError(f"{path}: not a regular file (a pipe or a device?)")
    try:
        with open(path, "rb") as f:
            head = f.read(64 * 1024)
    except OSError as e:
        raise SessionError(f"cannot read {path}: {e.strerror or e}") from None
    if head.startswith(_ZSTD_MAGIC):
        raise SessionError(f"{path}: a compressed session is written whole when its run"
                           " ends: replay it then, without --follow")
    if head and not head.lstrip().startswith(b"{"):
        raise SessionError(f"{path}: {NOT_A_SESSION}")
    return b"\n" in head or len(head) == 64 * 1024  # a long first line: let the reader judge


class FollowedSession(SessionStream):
    """A session read while it is written. Opening it waits (up to `timeout_s`) for
    the file and its header; iterating yields each event once its line is complete,
    waits for more at the end of the file, and stops after the end record. Raises
    FollowTimeout when the file stops growing for `timeout_s` first."""

    def __init__(self, path: Path | str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 poll_s: float = POLL_S, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not timeout_s > 0:
            raise ValueError(f"follow timeout must be positive, got {timeout_s}")
        self.timeout_s, self.poll_s = timeout_s, poll_s
        self._sleep, self._clock = sleep, clock
        path = Path(path)
        started = clock()
        while not _first_line_ready(path):
            if clock() - started > timeout_s:
                what = "did not appear" if not path.exists() else "got no header line"
                raise FollowTimeout(f"{path}: {what} within {timeout_s:g} s"
                                    " (is a run recording it? --follow-timeout)")
            sleep(poll_s)
        super().__init__(path)
        self.waiting = False  # at the end of the file, waiting for the writer
        self.bytes_read = 0

    def _source(self, f: Any) -> Iterator[bytes]:
        partial = b""
        last_growth = self._clock()
        while self.end is None:  # the reader sets `end` when the end record is decoded
            chunk = f.readline(MAX_LINE_BYTES - len(partial))
            if chunk:
                self.waiting = False
                self.bytes_read += len(chunk)
                last_growth = self._clock()
                partial += chunk
                if partial.endswith(b"\n") or len(partial) >= MAX_LINE_BYTES:
                    line, partial = partial, b""
                    yield line
                continue
            if self._clock() - last_growth > self.timeout_s:
                if partial:
                    # The writer died inside a line: the reader flags the cut, as it
                    # does a crashed run's last line, and stops.
                    yield partial
                    return
                raise FollowTimeout(
                    f"{self.path}: no new data for {self.timeout_s:g} s and no end record:"
                    " the recording run stopped without closing its session"
                    " (--follow-timeout to wait longer)")
            self.waiting = True
            self._sleep(self.poll_s)


class _Stopped(Exception):
    """The follower was told to stop while it waited for the writer."""


class FollowPlayer(Replayer):
    """A followed session as a replay for the dashboard: its events are published on
    the bus as the writer adds them (read on a thread: the reader blocks while it waits
    for the file to grow). `pause` holds them back until `resume`; speed has no
    meaning (the run sets the pace) and stays 1."""

    def __init__(self, stream: FollowedSession, bus: EventBus) -> None:
        super().__init__(stream.path, bus)
        self.stream = self.followed = stream
        self._stop = threading.Event()
        stream._sleep = self._sleep  # the reader's waits end when the player stops

    def _sleep(self, s: float) -> None:
        if self._stop.wait(s):
            raise _Stopped

    def now_s(self) -> float:
        return self.position_s

    def set_speed(self, speed: float) -> None:
        """The run sets the pace: nothing to change."""

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()

        def read() -> None:
            try:
                for ev in self.followed:
                    loop.call_soon_threadsafe(queue.put_nowait, ev)
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except _Stopped:
                pass
            except BaseException as exc:  # handed to the loop, raised there
                with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                    loop.call_soon_threadsafe(queue.put_nowait, exc)

        reader = threading.Thread(target=read, name="follow-reader", daemon=True)
        self.bus.publish(self.followed.header)
        reader.start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    if isinstance(item, SessionError):
                        # Said on the bus too: a dashboard shows it in its event log.
                        self.bus.publish(ErrorEvent(t_s=self.position_s, source="follow",
                                                    message=str(item), fatal=True))
                    raise item
                while self._paused:
                    self._changed.clear()
                    await self._changed.wait()
                self.position_s = max(self.position_s, item.t_s)
                self.events += 1
                self.bus.publish(item)
        finally:
            self._stop.set()
        self.at_end = True
        if self.followed.end is not None:
            self.bus.publish(self.followed.end)
        self.bus.close()
