"""Records a run as a JSONL session file: a header line, one line per event, an end line.

`SessionRecorder.write` runs on the asyncio loop thread for every event, so it only
serialises the event into an in-memory buffer. A small daemon thread moves the buffer
to the file at least every `flush_interval_s` of *wall* time: the loop may be idle or
running on virtual time, so its own timers cannot be trusted to flush. Data handed to
the OS survives a SIGKILL of this process, so a crash loses at most the last interval.

Events are written in the compact lines of the header's format version (3, or 2;
app/core/session_codec.py), or in full lines if it asks for version 1. Two options
shrink a session further: `thin_s` keeps at most one meter sample per device and one engine-state line per source
every `thin_s` seconds of the run (request, stage, workflow, knob... lines are all kept,
and so is each device's last reading, so energy totals stay exact), and `compress`
turns the closed file into `NAME.jsonl.zst` (zstandard), which every reader accepts.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from app.core.events import EndEvent, ErrorEvent, Event, SessionHeader
from app.core.session_codec import COMPACT_VERSION, LineEncoder
from app.core.session_reader import SessionError

__all__ = ["SessionError", "SessionRecorder", "is_secret_key", "redact_secrets"]

REDACTED = "***"

# Key segments that name a secret. Matched as whole segments so `max_tokens` and
# `prompt_tokens` stay, while `hf_token`, `session_auth` and `client_secret` go.
_SECRET_SEGMENTS = frozenset(
    {"authorization", "auth", "token", "password", "passwd", "secret", "credentials", "cookie"}
)

#: Wake the flusher early once this much is buffered...
_WAKE_FLUSHER_BYTES = 1 << 20
#: ...and write from the caller's thread if the flusher still has not kept up.
_INLINE_FLUSH_BYTES = 16 << 20

_OPTS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
_dumps = orjson.dumps

#: The zstandard level of compressed sessions: ~10x smaller than the JSONL at about
#: 100 MB/s on one core (bench/RESULTS-recorder.md).
ZSTD_LEVEL = 9
ZSTD_SUFFIX = ".zst"

#: Kinds that `thin_s` decimates: telemetry read on a timer. Everything else is kept.
_THINNED_KINDS = frozenset({"sample", "engine_state"})


def is_secret_key(key: str) -> bool:
    k = key.lower().replace("-", "_").replace(".", "_").replace(" ", "_")
    if "api_key" in k or "apikey" in k or "access_key" in k or "private_key" in k:
        return True
    return any(part in _SECRET_SEGMENTS for part in k.split("_"))


def redact_secrets(value: Any) -> Any:
    """A copy of `value` with the value of every secret-looking key replaced by "***",
    at any depth (dicts inside lists included). Bearer strings are redacted too, since
    header lists like ["Authorization: Bearer ..."] carry no key to match."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) else redact_secrets(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_secrets(v) for v in value]
    if isinstance(value, str) and "bearer " in value.lower():
        return REDACTED
    return value


def _default(obj: Any) -> Any:
    # Paths, enums and other odd config values: write their text rather than fail.
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return str(obj)


# Field names per event class: `Event.to_dict` calls dataclasses.fields() every time,
# which is most of the cost of recording an event.
_FIELD_NAMES: dict[type[Event], tuple[str, ...]] = {}


def _event_line(event: Event) -> bytes:
    cls = type(event)
    if cls.to_dict is not Event.to_dict:  # a subclass that shapes its own dict
        return orjson.dumps(event.to_dict(), default=_default, option=_OPTS)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    d: dict[str, Any] = {"kind": cls.kind}
    for name in names:
        d[name] = getattr(event, name)
    return orjson.dumps(d, default=_default, option=_OPTS)


def _full_line(event: Event, buf: list[bytes]) -> int:
    """Version 1: every field of every event, on a line of its own (appended to `buf`;
    returns its length)."""
    line = _event_line(event)
    buf.append(line)
    return len(line)


class SessionRecorder:
    """Writes one session file. `open` once, `write` per event, `close` once."""

    def __init__(self, path: Path | str, *, flush_interval_s: float = 0.25,
                 thin_s: float = 0.0, compress: bool = False) -> None:
        self.path = Path(path)
        self.flush_interval_s = flush_interval_s
        if not thin_s >= 0.0:
            raise ValueError(f"thin_s must be 0 or more, got {thin_s}")
        self.thin_s = thin_s
        self.compress = compress
        self.events_written = 0
        self.events_thinned = 0  # telemetry lines left out by thin_s
        # Appends an event's lines to the buffer, returns their bytes (open() sets it).
        self._encode: Callable[[Event, list[bytes]], int] = _full_line
        self._encoder: LineEncoder | None = None
        # thin_s: per (kind, device or source), the time of the last line written and
        # the newest event left out since (written at close, so totals stay exact).
        self._thin_last: dict[tuple[str, str], float] = {}
        self._thin_held: dict[tuple[str, str], Event] = {}
        self._file: IO[bytes] | None = None
        self._buf: list[bytes] = []
        self._buf_bytes = 0
        # Guards _buf/_buf_bytes (the loop thread appends, the flusher takes) and the
        # compact encoding's state (the stop watchdog may close the session from its own
        # thread while the loop is writing). One lock: write() takes it once per event.
        self._lock = threading.Lock()
        self._file_lock = threading.Lock()  # one writer of the file at a time
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._error: str | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------

    def open(self, header: SessionHeader, *, unique: bool = False) -> None:
        """Create the file (never overwriting one) and write the header. With `unique`,
        an existing name moves on to `NAME-2.jsonl`, `NAME-3.jsonl`...: the exclusive
        create makes this safe between processes started in the same instant."""
        if self._file is not None or self._closed:
            raise SessionError(f"{self.path}: recorder already opened")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SessionError(f"cannot create session folder {self.path.parent}: "
                               f"{e.strerror}") from None
        base = self.path
        for n in range(1, 10_000):
            if n > 1:
                self.path = base.with_name(f"{base.stem}-{n}{base.suffix}")
            try:
                f = open(self.path, "xb")  # noqa: SIM115 - lives until close()
                break
            except FileExistsError:
                if not unique:
                    raise SessionError(f"session file already exists: {self.path}") from None
            except OSError as e:
                raise SessionError(f"cannot create session file {self.path}: "
                                   f"{e.strerror}") from None
        else:
            raise SessionError(f"no free session name next to {base}")
        if self.path != base:
            header.name = self.path.stem
            if isinstance(header.config, dict) and "session_path" in header.config:
                header.config["session_path"] = str(self.path)
        header_dict = redact_secrets(header.to_dict())
        if header.version >= COMPACT_VERSION:
            self._encoder = LineEncoder(header.version)
            self._encode = self._compact_lines
        else:
            self._encode = _full_line
        try:
            f.write(orjson.dumps(header_dict, default=_default, option=_OPTS))
            f.flush()
        except orjson.JSONEncodeError as e:
            f.close()
            self.path.unlink()
            raise SessionError(f"cannot record the session header: {e}") from None
        except OSError as e:
            f.close()
            raise SessionError(f"cannot write session file {self.path}: {e.strerror}") from None
        self._file = f
        self._thread = threading.Thread(
            target=self._flusher, name=f"session-flusher:{self.path.name}", daemon=True
        )
        self._thread.start()
        # An exit that skips close() (an uncaught exception) still gets the buffer out.
        atexit.register(self.flush)

    def write(self, event: Event) -> None:
        """Buffer one event. Cheap: called on the loop thread for every event."""
        if self._file is None:
            if self._error is not None:
                raise SessionError(self._error)
            raise SessionError(f"{self.path}: write() before open() or after close()")
        with self._lock:
            if self.thin_s and event.kind in _THINNED_KINDS and self._thinned(event):
                return
            try:
                n = self._encode(event, self._buf)
            except orjson.JSONEncodeError as e:
                # One odd value (an int past 64 bits...) must not stop the recording:
                # keep a trace of it instead. Raising here would get the recorder
                # unsubscribed.
                n = self._unrecordable(event, e)
            size = self._buf_bytes = self._buf_bytes + n
        self.events_written += 1
        if size >= _WAKE_FLUSHER_BYTES:
            if size >= _INLINE_FLUSH_BYTES:
                # The flusher is not keeping up (slow disk): push back on the producer
                # rather than let memory grow without bound.
                self.flush()
            else:
                self._wake.set()
        if self._error is not None:
            raise SessionError(self._error)

    def _compact_lines(self, event: Event, buf: list[bytes]) -> int:
        assert self._encoder is not None
        n = 0
        for d in self._encoder.encode(event):  # _dump(), inline: this runs per event
            line = _dumps(d, default=_default, option=_OPTS)
            buf.append(line)
            n += len(line)
        return n

    @staticmethod
    def _dump(lines: list[dict[str, Any]], buf: list[bytes]) -> int:
        n = 0
        for d in lines:
            line = _dumps(d, default=_default, option=_OPTS)
            buf.append(line)
            n += len(line)
        return n

    def _unrecordable(self, event: Event, e: Exception) -> int:
        """Buffers the line written instead of an event that cannot be encoded. The
        compact encoding starts afresh from it (lines held back with it are lost, those
        of the event written before the one that failed are kept)."""
        d = ErrorEvent(t_s=event.t_s, source="recorder",
                       message=f"could not record a {event.kind} event: {e}").to_dict()
        if self._encoder is not None:
            d.update(self._encoder.reset())
        return self._dump([d], self._buf)

    def _finish_lines(self) -> None:
        """The lines the compact encoding holds back, if any, into the buffer (the lock
        held)."""
        if self._encoder is None:
            return
        try:
            n = self._dump(self._encoder.finish(), self._buf)
        except orjson.JSONEncodeError as e:
            n = self._unrecordable(ErrorEvent(t_s=0.0), e)
        self._buf_bytes += n

    def _thinned(self, event: Event) -> bool:
        """Whether `event` is left out by thin_s. A line with a note (the drain's start)
        is always kept."""
        if getattr(event, "note", None):
            return False
        key = (event.kind, str(getattr(event, "device", None) or getattr(event, "source", "")))
        last = self._thin_last.get(key)
        if last is None or event.t_s - last >= self.thin_s or event.t_s < last:
            self._thin_last[key] = event.t_s
            self._thin_held.pop(key, None)
            return False
        self._thin_held[key] = event
        self.events_thinned += 1
        return True

    def _write_held(self) -> None:
        """The newest reading of each device left out by thin_s (the last word on its
        energy counter, so the session's totals are those of the run), and the lines
        the compact encoding holds back."""
        with self._lock:
            self._write_held_locked()

    def _write_held_locked(self) -> None:
        held, self._thin_held = self._thin_held, {}
        self.events_thinned -= len(held)
        for ev in sorted(held.values(), key=lambda e: e.t_s):
            try:
                n = self._encode(ev, self._buf)
            except orjson.JSONEncodeError as e:
                n = self._unrecordable(ev, e)
            self._buf_bytes += n
            self.events_written += 1
        self._finish_lines()

    def flush(self) -> None:
        """Move everything buffered so far to the OS (survives a crash of this process)."""
        with self._file_lock:
            with self._lock:
                buf, self._buf, self._buf_bytes = self._buf, [], 0
            if not buf or self._file is None:
                return
            try:
                self._file.write(b"".join(buf))
                self._file.flush()
            except OSError as e:
                self._error = f"cannot write session file {self.path}: {e.strerror}"

    def close(self, end: EndEvent) -> None:
        """Write the end line, flush, fsync and stop the flusher. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop_flusher()
        f = self._file
        if f is None:
            return
        try:
            self._write_held()
            with self._lock:
                self._buf.append(_event_line(end))
            self.flush()
            if self._error is None:
                os.fsync(f.fileno())
        except OSError as e:
            self._error = self._error or f"cannot write session file {self.path}: {e.strerror}"
        finally:
            with self._file_lock:
                self._file = None
                f.close()
        if self._error is not None:
            raise SessionError(self._error)
        if self.compress:
            self.path = compress_session(self.path)

    def abort(self) -> None:
        """Flush what was buffered and close without an end line (the reader will say the
        run did not close cleanly). For paths where writing a summary is impossible."""
        if self._closed:
            return
        self._closed = True
        self._stop_flusher()
        with contextlib.suppress(Exception):
            self._write_held()
        self.flush()
        with self._file_lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    @property
    def error(self) -> str | None:
        """Why writing failed (disk full...), or None."""
        return self._error

    def __enter__(self) -> SessionRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    # -- flusher thread --------------------------------------------------------

    def _stop_flusher(self) -> None:
        atexit.unregister(self.flush)
        self._stop = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def _flusher(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self.flush()
            if self._error is not None:
                return


def compressed_path(path: Path) -> Path:
    return path.with_name(path.name + ZSTD_SUFFIX)


def compress_session(path: Path, *, level: int = ZSTD_LEVEL, keep: bool = False) -> Path:
    """Compress a closed session to `PATH.zst` (written beside it, fsynced, then renamed
    into place) and remove the original unless `keep`. Returns the new path. A file of
    that name already there is never overwritten."""
    import zstandard

    target = compressed_path(path)
    part = target.with_name(target.name + ".part")
    try:
        if target.exists():
            raise SessionError(f"cannot compress {path}: {target} already exists")
        cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
        with open(path, "rb") as src, open(part, "xb") as dst:
            cctx.copy_stream(src, dst, size=os.fstat(src.fileno()).st_size)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(part, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            part.unlink()
        raise SessionError(f"cannot compress {path}: {e.strerror or e}") from None
    if not keep:
        path.unlink()
    return target
