"""Reads session files back: whole (`read_session`), streamed (`open_session`,
`iter_events`), or as the one-line summary `wattflow sessions` lists.

A file whose last line was cut by a crash is accepted and flagged (`truncated`);
anything else that is wrong with a file is a `SessionError` with a one-line message
meant for the user.
"""

from __future__ import annotations

import datetime
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.core.events import (
    SESSION_VERSION,
    EndEvent,
    Event,
    SessionHeader,
    event_from_dict,
)

NOT_A_SESSION = "not a wattflow session (first line is not a session header)"

# How much of the file's end to read at first when looking for the end record; the
# end line carries the stats summary, so it can be tens of kilobytes.
_TAIL_CHUNK = 64 * 1024


class SessionError(Exception):
    """A session file cannot be written or read; the message is one line for the user."""


@dataclass(slots=True)
class SessionData:
    path: Path
    header: SessionHeader
    events: list[Event]  # everything between the header and the end record
    end: EndEvent | None
    truncated: bool  # the last line was cut (crash while writing)
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SessionSummary:
    path: Path
    header: SessionHeader
    truncated: bool
    complete: bool  # has an end record
    duration_s: float | None
    requests: int | None
    j_per_output_token: float | None


def _open_error(path: Path, e: OSError) -> SessionError:
    if isinstance(e, FileNotFoundError):
        return SessionError(f"no such session file: {path}")
    if isinstance(e, IsADirectoryError):
        return SessionError(f"{path} is a directory, not a session file")
    return SessionError(f"cannot read {path}: {e.strerror or e}")


# Header fields the readers index into: a wrong type must be an input error, not a crash.
_HEADER_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "clock": (str,),
    "started_unix_s": (int, float),
    "config": (dict,),
    "host": (dict,),
    "engine": (dict,),
    "workload": (dict,),
    "meters": (list,),
    "knobs": (dict,),
}


def _parse_header(path: Path, line: bytes) -> SessionHeader:
    if not line:
        raise SessionError(f"{path}: empty file, not a wattflow session")
    try:
        d = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise SessionError(f"{path}: {NOT_A_SESSION}") from None
    if not isinstance(d, dict) or d.get("kind") != "session":
        raise SessionError(f"{path}: {NOT_A_SESSION}")
    version = d.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise SessionError(f"{path}: unknown session version {version!r}")
    if version != SESSION_VERSION:
        raise SessionError(
            f"{path}: session version {version} is not supported "
            f"(this wattflow reads version {SESSION_VERSION})"
        )
    for key, typ in _HEADER_TYPES.items():
        if key in d and not isinstance(d[key], typ):
            raise SessionError(f"{path}: bad session header: {key} is not a {typ[-1].__name__}")
    try:
        header = event_from_dict(d)
    except (TypeError, ValueError) as e:
        raise SessionError(f"{path}: bad session header: {e}") from None
    assert isinstance(header, SessionHeader)
    return header


class SessionStream:
    """A session read lazily: the header is read (and checked) at once; iterating
    yields the events after it, one line at a time, so big files need little memory.
    `end`, `truncated` and `warnings` are complete once iteration has finished."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                first = f.readline()
                self._body_offset = f.tell()
        except OSError as e:
            raise _open_error(self.path, e) from None
        self.header = _parse_header(self.path, first)
        self.end: EndEvent | None = None
        self.truncated = False
        self.warnings: list[str] = []
        self.last_t_s = 0.0

    def __iter__(self) -> Iterator[Event]:
        self.end, self.truncated, self.warnings = None, False, []
        unknown: Counter[str] = Counter()
        after_end = 0
        path = self.path
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed in the finally below
        except OSError as e:
            raise _open_error(path, e) from None
        try:
            f.seek(self._body_offset)
            for lineno, raw in enumerate(f, start=2):
                try:
                    d = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    if not raw.endswith(b"\n"):
                        # The writer always ends a line with its newline in the same
                        # write: a last line without one was cut by a crash.
                        self.truncated = True
                        self.warnings.append(
                            f"line {lineno}: last line is incomplete (the run was cut short)"
                        )
                        break
                    if not raw.strip():
                        continue  # a stray blank line carries nothing
                    raise SessionError(f"{path} line {lineno}: not valid JSON") from None
                if not isinstance(d, dict):
                    raise SessionError(f"{path} line {lineno}: not an event (not a JSON object)")
                t_s = d.get("t_s", 0.0)
                if not isinstance(t_s, int | float) or isinstance(t_s, bool) or math.isnan(t_s):
                    raise SessionError(f"{path} line {lineno}: t_s is not a number")
                kind = d.get("kind")
                if kind == "session":
                    raise SessionError(
                        f"{path} line {lineno}: a second session header "
                        "(two sessions joined into one file?)"
                    )
                try:
                    ev = event_from_dict(d)
                except ValueError:
                    unknown[str(kind)] += 1
                    continue
                except TypeError as e:
                    raise SessionError(f"{path} line {lineno}: bad {kind} event: {e}") from None
                if isinstance(ev, EndEvent):
                    if not isinstance(ev.summary, dict):
                        raise SessionError(f"{path} line {lineno}: bad end record (summary)")
                    if self.end is not None:
                        raise SessionError(f"{path} line {lineno}: a second end record")
                    self.end = ev
                    continue
                if self.end is not None:
                    after_end += 1
                self.last_t_s = max(self.last_t_s, ev.t_s)
                yield ev
        finally:
            f.close()
        for kind, n in sorted(unknown.items()):
            self.warnings.append(
                f"skipped {n} event(s) of unknown kind {kind!r} (written by a newer wattflow?)"
            )
        if after_end:
            self.warnings.append(f"{after_end} event(s) after the end record")


def open_session(path: Path | str) -> SessionStream:
    return SessionStream(path)


def iter_events(path: Path | str) -> Iterator[Event]:
    """The events of a session after its header, streamed (the end record excluded)."""
    return iter(SessionStream(path))


def read_header(path: Path | str) -> SessionHeader:
    return SessionStream(path).header


def read_session(path: Path | str) -> SessionData:
    stream = SessionStream(path)
    events = list(stream)
    return SessionData(
        path=stream.path,
        header=stream.header,
        events=events,
        end=stream.end,
        truncated=stream.truncated,
        warnings=list(stream.warnings),
    )


# -- summaries for `wattflow sessions` -------------------------------------------------


def _last_lines(path: Path) -> tuple[bytes, bytes | None]:
    """The file's last line (possibly without its newline) and the one before it
    (None if the file has a single line), read from the end of the file."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        chunk = _TAIL_CHUNK
        while True:
            start = max(0, size - chunk)
            f.seek(start)
            data = f.read(size - start)
            body = data[:-1] if data.endswith(b"\n") else data
            # Two newlines inside the chunk (or the file start) bound the last two lines.
            if body.count(b"\n") >= 2 or start == 0:
                break
            chunk *= 4
    lines = data.splitlines(keepends=True)
    last = lines[-1] if lines else b""
    prev = lines[-2] if len(lines) >= 2 and (start == 0 or len(lines) >= 3) else None
    return last, prev


def _parse_end(line: bytes | None) -> EndEvent | None:
    if line is None:
        return None
    try:
        d = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(d, dict) or d.get("kind") != "end":
        return None
    ev = event_from_dict(d)
    return ev if isinstance(ev, EndEvent) and isinstance(ev.summary, dict) else None


def _num(d: dict[str, Any], key: str) -> float | None:
    v = d.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def summarize(path: Path | str) -> SessionSummary:
    """What `wattflow sessions` shows about one file. Cheap for a closed session (the
    end record's summary is read from the file's tail); a session with no end record
    is read in full and its statistics recomputed."""
    stream = SessionStream(path)
    try:
        last, prev = _last_lines(stream.path)
    except OSError as e:
        raise _open_error(stream.path, e) from None
    truncated = False
    end_line: bytes | None = last
    if not last.endswith(b"\n"):
        try:
            orjson.loads(last)
        except orjson.JSONDecodeError:
            truncated, end_line = True, prev
    end = _parse_end(end_line)
    if end is not None:
        s = end.summary
        requests = _num(s, "requests_finished")
        return SessionSummary(
            path=stream.path,
            header=stream.header,
            truncated=truncated,
            complete=True,
            duration_s=_num(s, "duration_s") if "duration_s" in s else end.t_s,
            requests=int(requests) if requests is not None else None,
            j_per_output_token=_num(s, "j_per_output_token"),
        )
    # No end record: the run crashed or is still going. Recompute from the events.
    from app.core.stats import LiveStats  # lazy: only this rare path needs it

    stats = LiveStats()
    try:
        for ev in stream:
            stats.on_event(ev)
        snap = stats.snapshot()
    except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as e:
        # A line that parsed as JSON but holds values of the wrong type.
        raise SessionError(f"{stream.path}: bad event: {type(e).__name__}: {e}") from None
    return SessionSummary(
        path=stream.path,
        header=stream.header,
        truncated=stream.truncated,
        complete=stream.end is not None,
        duration_s=snap.duration_s,
        requests=snap.requests_finished,
        j_per_output_token=snap.j_per_output_token,
    )


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(round(seconds), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def _started(header: SessionHeader) -> str:
    if not header.started_unix_s:
        return "?"
    try:
        dt = datetime.datetime.fromtimestamp(header.started_unix_s)
    except (OverflowError, OSError, ValueError):
        return "?"
    return dt.strftime("%Y-%m-%d %H:%M")


def _name_of(info: dict[str, Any]) -> str:
    name = info.get("name")
    return str(name) if name else "?"


def format_summary(s: SessionSummary) -> str:
    jpt = f"{s.j_per_output_token:.3f} J/tok" if s.j_per_output_token is not None else "- J/tok"
    req = f"{s.requests} req" if s.requests is not None else "? req"
    flags = " (cut)" if s.truncated else (" (open)" if not s.complete else "")
    return (
        f"{s.path.name:<32} {_started(s.header):<16}  {_name_of(s.header.workload):<12} "
        f"{_name_of(s.header.engine):<8} {format_duration(s.duration_s):>7} {req:>9} "
        f"{jpt:>13}{flags}"
    )


def summary_line(path: Path | str) -> str:
    return format_summary(summarize(path))
