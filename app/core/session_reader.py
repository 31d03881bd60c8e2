"""Reads session files back: whole (`read_session`), streamed (`open_session`,
`iter_events`), or as the one-line summary `wattflow sessions` lists.

What is accepted, and what is refused:

- A last line cut by a crash (no newline, not valid JSON) is accepted and flagged
  (`truncated`), as are blank lines, and lines of a kind this version does not know
  (skipped with a warning: a newer wattflow may have written them).
- Anything else that is wrong is refused with a `SessionError` of one line naming the
  file and, for a bad line, its number: a missing or malformed header, a line that is
  not JSON (NaN and Infinity are not JSON), a field of the wrong type (`prompt_tokens`
  a string, `energy_j` not an object of numbers, ...), a second header, a second end
  record. A damaged line in the middle is refused rather than skipped: a session is a
  measurement, and statistics recomputed without some of its lines would be wrong
  without saying so. `wattflow sessions` lists such a file with the reason.

Every event is checked against the types of its dataclass in `app.core.events`, so
what the reader returns can be added, compared and formatted by any consumer.
"""

from __future__ import annotations

import datetime
import functools
import gc
import io
import math
import os
import stat
import types
import typing
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import zstandard

from app.core.events import (
    EVENT_KINDS,
    READABLE_VERSIONS,
    EndEvent,
    Event,
    RequestEvent,
    SessionHeader,
    event_from_dict,
    field_names,
)
from app.core.session_codec import (
    FIRST_TOKEN,
    RESET,
    STAGE_FINISHED,
    STAGE_STARTED,
    STAGES,
    LineDecoder,
    unpack,
)

NOT_A_SESSION = "not a wattflow session (first line is not a session header)"

# How much of the file's end to read at first when looking for the end record; the
# end line carries the stats summary, so it can be tens of kilobytes.
_TAIL_CHUNK = 64 * 1024

#: The longest line read. The recorder's longest (the header, the end record) are tens
#: of kilobytes; a longer "line" is something else (a binary file, a log with no
#: newlines), refused before it fills memory.
MAX_LINE_BYTES = 64 * 1024 * 1024

#: The latest time an event of a run can have (`--duration` is at most 1e7 s; the
#: drain and a long engine start are well within the margin).
MAX_T_S = 1e8


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


def _check_regular(path: Path) -> None:
    """Refuse what is not a plain file before opening it: opening a FIFO waits for a
    writer, and reading a device (/dev/zero) never ends."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise _open_error(path, e) from None
    if stat.S_ISDIR(mode):
        raise SessionError(f"{path} is a directory, not a session file")
    if not stat.S_ISREG(mode):
        raise SessionError(f"{path}: not a regular file (a pipe or a device?);"
                           " save the session to a file first")


def _lines(f: Any) -> Iterator[bytes]:
    """The file's lines, none longer than MAX_LINE_BYTES (a longer one is cut there)."""
    return iter(functools.partial(f.readline, MAX_LINE_BYTES), b"")


def _too_long(path: Path, lineno: int) -> SessionError:
    return SessionError(f"{path} line {lineno}: longer than {MAX_LINE_BYTES >> 20} MiB,"
                        " not a session line")


def _open_error(path: Path, e: OSError) -> SessionError:
    if isinstance(e, FileNotFoundError):
        return SessionError(f"no such session file: {path}")
    if isinstance(e, IsADirectoryError):
        return SessionError(f"{path} is a directory, not a session file")
    return SessionError(f"cannot read {path}: {e.strerror or e}")


# -- field types ------------------------------------------------------------------------
# Each event field's JSON type, derived from the event dataclasses' annotations: a line
# whose values have other types is refused here, so no consumer (statistics, report,
# dashboard) meets a string where it adds numbers.

_NUMBER = frozenset({int, float})  # bool is its own type: `type(True) is bool`


@dataclass(frozen=True, slots=True)
class _FieldType:
    types: frozenset[type]
    what: str
    items: Callable[[Any], bool] | None = None  # a further check: contents, or range


# Contents checks, as set comparisons: they run for every line, so no Python loop.
_STR, _DICT, _NUMBER_OR_NULL = frozenset({str}), frozenset({dict}), _NUMBER | {type(None)}


def _all_str(v: Any) -> bool:
    return set(map(type, v)) <= _STR


def _all_dict(v: Any) -> bool:
    return set(map(type, v)) <= _DICT


def _all_numbers(v: Any) -> bool:
    return set(map(type, v.values())) <= _NUMBER


def _numbers_or_null(v: Any) -> bool:
    return set(map(type, v.values())) <= _NUMBER_OR_NULL


#: Whole-number fields are counts (tokens, requests, calls, queue lengths): never
#: negative, and bounded so that sums over any file of realistic size stay exact and
#: within the 64 bits JSON writers accept (2^40 is a year of an H100 at 30k tok/s).
MAX_COUNT = 2**40


def _count(v: Any) -> bool:
    return 0 <= v <= MAX_COUNT


def _field_type(hint: Any) -> _FieldType | None:
    """The JSON types a field annotated `hint` may hold; None: anything."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    nullable = type(None) in args
    args = tuple(a for a in args if a is not type(None))
    if len(args) != 1:
        return None
    h = args[0]
    origin, inner = typing.get_origin(h), typing.get_args(h)
    ft: _FieldType
    if h is float:
        ft = _FieldType(_NUMBER, "a number")
    elif h is int:
        ft = _FieldType(frozenset({int}), "a whole number from 0 to 2^40", _count)
    elif h is str:
        ft = _FieldType(frozenset({str}), "a string")
    elif h is bool:
        ft = _FieldType(frozenset({bool}), "true or false")
    elif origin is list and inner and inner[0] is str:
        ft = _FieldType(frozenset({list}), "a list of strings", _all_str)
    elif origin is list and inner and typing.get_origin(inner[0]) is dict:
        ft = _FieldType(frozenset({list}), "a list of objects", _all_dict)
    elif origin is dict and len(inner) == 2 and inner[1] is float:
        ft = _FieldType(frozenset({dict}), "an object of numbers", _all_numbers)
    elif origin is dict:
        ft = _FieldType(frozenset({dict}), "an object")
    else:
        return None
    if nullable:
        return _FieldType(ft.types | {type(None)}, f"{ft.what} or null", ft.items)
    return ft


@dataclass(frozen=True, slots=True)
class _Checks:
    fields: dict[str, _FieldType]
    types: dict[str, frozenset[type]]  # the same, flattened for the per-line loop
    items: tuple[tuple[str, Callable[[Any], bool]], ...]


_CHECKS: dict[type[Event], _Checks] = {}


def _checks(cls: type[Event]) -> _Checks:
    c = _CHECKS.get(cls)
    if c is None:
        fields: dict[str, _FieldType] = {}
        for name, hint in typing.get_type_hints(cls).items():
            ft = _field_type(hint) if name != "kind" else None
            if ft is not None:
                fields[name] = ft
        if cls is SessionHeader:
            # Knob values are numbers (or unset), like a knob event's value.
            fields["knobs"] = _FieldType(frozenset({dict}), "an object of numbers or nulls",
                                         _numbers_or_null)
        c = _CHECKS[cls] = _Checks(
            fields, {k: ft.types for k, ft in fields.items()},
            tuple((k, ft.items) for k, ft in fields.items() if ft.items is not None))
    return c


# The end record's summary is the live statistics' last snapshot; these entries are
# read back (by `sessions`, replay and report), so they must hold what they claim.
_SUMMARY_TYPES: dict[str, _FieldType] = {
    **{key: _FieldType(_NUMBER | {type(None)}, "a number or null") for key in (
        "t_s", "duration_s", "wall_s", "requests_finished", "requests_failed",
        "workflows_finished", "output_tokens", "prompt_tokens", "j_per_output_token",
        "gpu_j_per_output_token")},
    **{key: _FieldType(frozenset({dict}), "an object of numbers", _all_numbers)
       for key in ("energy_j", "idle_energy_j", "avg_power_w", "power_w")},
}


def show(value: Any, limit: int = 40) -> str:
    """A value for an error message: its repr, cut so a message stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_error(d: dict[str, Any], fields: dict[str, _FieldType], prefix: str = "") -> str | None:
    """What is wrong with the types of `d`'s fields, or None."""
    for key, value in d.items():
        ft = fields.get(key)
        if ft is None:
            continue
        if type(value) not in ft.types or (
                ft.items is not None and value is not None and not ft.items(value)):
            return f"{prefix}{key} is not {ft.what}, got {show(value)}"
    return None


def check_event_dict(d: dict[str, Any]) -> str | None:
    """Why a session line's object cannot be an event (one short phrase), or None.
    A kind this version does not know is not checked (the caller skips it)."""
    kind = d.get("kind")
    cls = EVENT_KINDS.get(kind) if type(kind) is str else None
    if cls is None:
        return None
    t_s = d.get("t_s", 0.0)
    if t_s != t_s or t_s in _INFINITIES:  # JSON has no inf; a number near it is fine
        return f"t_s is not a finite number, got {d['t_s']}"
    return _check(cls, d)


def _check(cls: type[Event], d: dict[str, Any]) -> str | None:
    """check_event_dict for a line whose kind is known to be `cls`'s."""
    c = _CHECKS.get(cls) or _checks(cls)
    # The usual line is right: one pass of type lookups; the message only when not.
    allowed = c.types
    for key, value in d.items():
        t = allowed.get(key)
        if t is not None and type(value) not in t:
            return _type_error(d, c.fields)
    for key, items in c.items:
        value = d.get(key)
        if value and not items(value):  # its type is right by now
            return _type_error(d, c.fields)
    if cls is EndEvent and "summary" in d:
        return _type_error(d["summary"], _SUMMARY_TYPES, "summary.")
    return None


_INFINITIES = (math.inf, -math.inf)

_LINE_KEYS: dict[type[Event], frozenset[str]] = {}


def _line_keys(cls: type[Event]) -> frozenset[str]:
    keys = _LINE_KEYS.get(cls)
    if keys is None:
        keys = _LINE_KEYS[cls] = field_names(cls) | {"kind"}
    return keys


def _build(cls: type[Event], d: dict[str, Any]) -> Event:
    """The event of a checked line object `d` (the reader's own: it is consumed).
    Fields this version does not know are ignored (a newer writer's additions)."""
    keys = _line_keys(cls)
    if "t_s" not in d:
        d = {**d, "t_s": 0.0}
    if d.keys() <= keys:
        del d["kind"]
        return cls(**d)
    names = field_names(cls)
    return cls(**{k: v for k, v in d.items() if k in names})


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
        raise SessionError(f"{path}: unknown session version {show(version)}")
    if version not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in sorted(READABLE_VERSIONS))
        raise SessionError(
            f"{path}: session version {show(version)} is not supported "
            f"(this wattflow reads versions {readable})"
        )
    bad = check_event_dict(d)
    if bad is not None:
        raise SessionError(f"{path}: bad session header: {bad}")
    try:
        header = event_from_dict(d)
    except (TypeError, ValueError) as e:
        raise SessionError(f"{path}: bad session header: {e}") from None
    assert isinstance(header, SessionHeader)
    return header


# -- compressed sessions -------------------------------------------------------------

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def is_compressed(path: Path) -> bool:
    """Whether the file is zstandard-compressed (by its first bytes, not its name)."""
    with open(path, "rb") as f:
        return f.read(4) == _ZSTD_MAGIC


def _open_lines(path: Path) -> tuple[IO[bytes], bool]:
    """The session file for reading lines, and whether it is compressed: decompressed
    on the fly when it is a `.jsonl.zst` (any zstandard file), as it is otherwise."""
    f = open(path, "rb")  # noqa: SIM115 - the caller closes it (or the reader over it)
    try:
        compressed = f.read(4) == _ZSTD_MAGIC
        f.seek(0)
        if not compressed:
            return f, False
        return io.BufferedReader(_ZstdStream(f), 1 << 20), True
    except BaseException:
        f.close()
        raise


class _ZstdStream(io.RawIOBase):
    """The decompressed bytes of a zstandard file (its frames one after the other).
    Unlike zstandard's own stream reader, a file that ends inside a frame (cut in a
    copy) is an error, not a quiet end: a compressed session is only ever written
    whole."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._d = zstandard.ZstdDecompressor().decompressobj()
        self._out = memoryview(b"")
        self._started = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._out:
            chunk = self._f.read(1 << 20)
            if not chunk:
                if self._started and not self._d.eof:
                    raise zstandard.ZstdError("the data ends inside a frame (a cut file?)")
                return 0
            self._started = True
            out = self._d.decompress(chunk)
            while self._d.eof and self._d.unused_data:  # the next frame
                rest = self._d.unused_data
                self._d = zstandard.ZstdDecompressor().decompressobj()
                out += self._d.decompress(rest)
            self._out = memoryview(out)
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def _damaged(path: Path, e: Exception) -> SessionError:
    return SessionError(f"{path}: compressed data is damaged ({e})")


class SessionStream:
    """A session read lazily: the header is read (and checked) at once; iterating
    yields the events after it, one line at a time, so big files need little memory.
    `end`, `truncated` and `warnings` are complete once iteration has finished.
    A zstandard-compressed file (`NAME.jsonl.zst`) is read the same way."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        _check_regular(self.path)
        try:
            f, self.compressed = _open_lines(self.path)
            with f:
                first = f.readline(MAX_LINE_BYTES)
                self._body_offset = 0 if self.compressed else f.tell()
        except OSError as e:
            raise _open_error(self.path, e) from None
        except zstandard.ZstdError as e:
            raise _damaged(self.path, e) from None
        if len(first) == MAX_LINE_BYTES and not first.endswith(b"\n"):
            raise SessionError(f"{self.path}: {NOT_A_SESSION}")
        self.header = _parse_header(self.path, first)
        self.end: EndEvent | None = None
        self.truncated = False
        self.warnings: list[str] = []
        self.last_t_s = 0.0

    def __iter__(self) -> Iterator[Event]:
        try:
            yield from self._events()
        except zstandard.ZstdError as e:
            raise _damaged(self.path, e) from None

    def _events(self) -> Iterator[Event]:
        self.end, self.truncated, self.warnings = None, False, []
        unknown: Counter[str] = Counter()
        after_end = 0
        path = self.path
        decoder = LineDecoder(self.header.version) if self.header.version >= 2 else None
        kinds = EVENT_KINDS
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        number = _NUMBER
        isfinite = math.isfinite
        try:
            f, _ = _open_lines(path)
        except OSError as e:
            raise _open_error(path, e) from None
        try:
            if self.compressed:
                f.readline(MAX_LINE_BYTES)
            else:
                f.seek(self._body_offset)
            for lineno, raw in enumerate(self._source(f), start=2):
                if len(raw) == MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    raise _too_long(path, lineno)
                try:
                    d = loads(raw)
                except decode_error:
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
                if type(d) is not dict:
                    raise SessionError(f"{path} line {lineno}: not an event (not a JSON object)")
                kind = d.get("kind")
                if type(kind) is not str:
                    raise SessionError(f"{path} line {lineno}: not an event (no kind)")
                t_s = d.get("t_s", 0.0)
                if type(t_s) not in number or not isfinite(t_s):
                    raise SessionError(f"{path} line {lineno}: t_s is not a number,"
                                       f" got {show(t_s)}")
                if not -1.0 <= t_s <= MAX_T_S:
                    # Seconds since the run started: a run lasts at most --duration's
                    # 1e7 s. A time beyond is damage, and replaying up to it would wait
                    # for ever.
                    raise SessionError(f"{path} line {lineno}: t_s {t_s:g} is outside a"
                                       f" run (0 to {MAX_T_S:g} s)")
                cls = kinds.get(kind)
                if cls is None:
                    unknown[kind] += 1
                    continue
                if cls is SessionHeader:
                    raise SessionError(
                        f"{path} line {lineno}: a second session header "
                        "(two sessions joined into one file?)"
                    )
                bad = _check(cls, d)
                if bad is not None:
                    raise SessionError(f"{path} line {lineno}: bad {kind} event: {bad}")
                if decoder is not None and cls is not EndEvent:
                    if "t_s" not in d:
                        d["t_s"] = 0.0
                    if (STAGES in d or STAGE_STARTED in d or STAGE_FINISHED in d
                            or FIRST_TOKEN in d or RESET in d):
                        for ev in self._unpacked(decoder, cls, d, lineno):
                            if ev.t_s > self.last_t_s:
                                self.last_t_s = ev.t_s
                            if self.end is not None:
                                after_end += 1
                            yield ev
                        continue
                    if not d.keys() <= (_LINE_KEYS.get(cls) or _line_keys(cls)):
                        names = _line_keys(cls)  # a newer writer's fields: dropped
                        d = {k: v for k, v in d.items() if k in names}
                    full = decoder.decode(cls, d)
                    if "kind" in full:
                        del full["kind"]
                    try:
                        ev = cls(**full)
                    except TypeError as e:
                        raise SessionError(f"{path} line {lineno}: bad {kind} event: {e}"
                                           ) from None
                else:
                    try:
                        ev = _build(cls, d)
                    except TypeError as e:
                        raise SessionError(f"{path} line {lineno}: bad {kind} event: {e}"
                                           ) from None
                if cls is EndEvent:
                    if self.end is not None:
                        raise SessionError(f"{path} line {lineno}: a second end record")
                    self.end = ev  # type: ignore[assignment]
                    continue
                if self.end is not None:
                    after_end += 1
                if ev.t_s > self.last_t_s:
                    self.last_t_s = ev.t_s
                yield ev
        finally:
            f.close()
        for kind, n in sorted(unknown.items()):
            self.warnings.append(
                f"skipped {n} event(s) of unknown kind {show(kind)}"
                " (written by a newer wattflow?)"
            )
        if after_end:
            self.warnings.append(f"{after_end} event(s) after the end record")

    def _source(self, f: Any) -> Iterator[bytes]:
        """The body's lines as read from `f` (placed after the header). A subclass that
        tails a file still being written (replay --follow) yields them as they come."""
        return _lines(f)


    def _unpacked(self, decoder: LineDecoder, cls: type[Event], d: dict[str, Any],
                  lineno: int) -> list[Event]:
        """The events of a version-2 line that packs several (session_codec.unpack)."""
        path = self.path
        if d.pop(RESET, None) is not None:
            decoder.reset()
        parts = unpack(d)
        if isinstance(parts, str):
            raise SessionError(f"{path} line {lineno}: bad {cls.kind} event: {parts}")
        if cls is RequestEvent and len(parts) > 1:
            wid, node = decoder.request_identity(d)
            for part in parts:
                if part["kind"] == "stage":
                    part["workflow_id"], part["node"] = wid, node
        out = []
        for part in parts:
            pcls = EVENT_KINDS[part["kind"]]
            if part is not d:
                part.setdefault("t_s", 0.0)  # as for a line of its own
                bad = _check(pcls, part)
                if bad is not None:
                    raise SessionError(f"{path} line {lineno}: bad {pcls.kind} event"
                                       f" packed in a {cls.kind} line: {bad}")
            out.append(_decoded(decoder, pcls, part, path, lineno))
        return out


def _decoded(decoder: LineDecoder, cls: type[Event], d: dict[str, Any], path: Path,
             lineno: int) -> Event:
    """The event of a checked version-2 line object (unpacked): what it leaves out put
    back. Fields this version does not know are dropped first (a newer writer's)."""
    if not d.keys() <= _line_keys(cls):
        names = _line_keys(cls)
        d = {k: v for k, v in d.items() if k in names}
    full = decoder.decode(cls, d)
    try:
        if "kind" in full:
            del full["kind"]
        return cls(**full)
    except TypeError as e:
        raise SessionError(f"{path} line {lineno}: bad {cls.kind} event: {e}") from None


def open_session(path: Path | str) -> SessionStream:
    return SessionStream(path)


def iter_events(path: Path | str) -> Iterator[Event]:
    """The events of a session after its header, streamed (the end record excluded)."""
    return iter(SessionStream(path))


def read_header(path: Path | str) -> SessionHeader:
    return SessionStream(path).header


def read_session(path: Path | str) -> SessionData:
    stream = SessionStream(path)
    # Every event is kept, none in a reference cycle: the cyclic collector would only
    # rescan the growing list again and again (a sixth of the time of a long session).
    collecting = gc.isenabled()
    gc.disable()
    try:
        events = list(stream)
    finally:
        if collecting:
            gc.enable()
    return SessionData(
        path=stream.path,
        header=stream.header,
        events=events,
        end=stream.end,
        truncated=stream.truncated,
        warnings=list(stream.warnings),
    )


# -- summaries for `wattflow sessions` -------------------------------------------------


def _last_lines_compressed(path: Path) -> tuple[bytes, bytes | None]:
    """_last_lines of a compressed file: decompressed from the start (no seeking in a
    zstandard stream), which runs at hundreds of MB/s."""
    last, prev = b"", None
    f, _ = _open_lines(path)
    with f:
        for n, line in enumerate(_lines(f)):
            if n:
                prev = last
            last = line
    return last, prev


def _last_lines(path: Path) -> tuple[bytes, bytes | None]:
    """The file's last line (possibly without its newline) and the one before it
    (None if the file has a single line), read from the end of the file."""
    if is_compressed(path):
        return _last_lines_compressed(path)
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
            if chunk >= 2 * MAX_LINE_BYTES:
                # No end record can be that long: say none, and let the full read
                # (which refuses too long a line) tell what the file is.
                return b"", None
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
    if not isinstance(d, dict) or d.get("kind") != "end" or check_event_dict(d) is not None:
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
    except zstandard.ZstdError as e:
        raise _damaged(stream.path, e) from None
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
    if seconds is None or not math.isfinite(seconds):
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
