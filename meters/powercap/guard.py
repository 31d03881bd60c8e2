"""Never leave a GPU capped: save the limit in force before the first change, put it
back on every exit path.

Before a device's first change its limit in force is written to a JSON state file
(atomically: temp file, fsync, rename), so even a SIGKILLed run leaves behind what
`wattflow restore` needs. `restore()` puts every saved limit back and deletes the file.
It runs from `__exit__` (normal end, exceptions, Ctrl-C: KeyboardInterrupt and asyncio
cancellation unwind through it), from SIGTERM/SIGHUP handlers (whose default action
would kill the process without unwinding), and from atexit. It is idempotent, so the
several paths may all fire.

Usage (the runner):

    with PowerCapGuard() as guard:          # installs signal handlers + atexit
    (the run itself goes through meters.powercap.controller.PowerCapController)
        guard.apply(meter, "gpu0", 300.0)   # saves 700 W to disk, then sets 300 W
        ...                                 # run
    # here every GPU is back to its saved limit; guard.results says how it went
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from meters.base import Meter, PowerCapError
from meters.powercap.control import PowerCapControl
from meters.powercap.restorers import restorer_for
from meters.powercap.result import RestoreResult

STATE_VERSION = 1
STATE_FILE = "powercap.json"


class StateFileError(RuntimeError):
    """The state file cannot be read; the message is one line."""


def default_state_path() -> Path:
    """$WATTFLOW_STATE_DIR, else $XDG_STATE_HOME/wattflow, else ~/.local/state/wattflow."""
    if d := os.environ.get("WATTFLOW_STATE_DIR"):
        return Path(d) / STATE_FILE
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "wattflow" / STATE_FILE


def read_state(path: Path) -> dict[str, Any] | None:
    """The state file's content, None if there is none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            raise ValueError("no entries")
        for e in data["entries"]:
            float(e["limit_w"])
            str(e["meter"])
    except (ValueError, TypeError, KeyError) as exc:
        raise StateFileError(f"{path} is not a wattflow power-cap state file ({exc})") from None
    return data


def _process_start(pid: int) -> str | None:
    """Start time of `pid` (field 22 of /proc/PID/stat): tells a live holder from a
    recycled pid. None where /proc is absent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def holder_alive(state: dict[str, Any]) -> bool:
    """Whether the run that wrote `state` is still running (and so owns those caps)."""
    pid = state.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    start = state.get("pid_start")
    return start is None or _process_start(pid) in (None, start)


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # fsync the folder too, so the rename itself survives a crash.
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _same_device(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.get("meter") != b.get("meter"):
        return False
    if a.get("uuid") and b.get("uuid"):
        return bool(a["uuid"] == b["uuid"])
    return bool(a.get("device") == b.get("device"))


def restore_entries(entries: list[dict[str, Any]]) -> list[RestoreResult]:
    out: list[RestoreResult] = []
    by_meter: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_meter.setdefault(str(e["meter"]), []).append(e)
    for meter, group in by_meter.items():
        fn = restorer_for(meter)
        if fn is None:
            out += [
                RestoreResult(
                    str(e.get("device")),
                    float(e["limit_w"]),
                    False,
                    f"no way to restore a {meter!r} limit outside a run",
                )
                for e in group
            ]
        else:
            out += fn(group)
    return out


def restore_file(path: Path) -> list[RestoreResult]:
    """What `wattflow restore` does: restore every entry, delete the file if all went
    back, else keep only the ones that failed (for another try)."""
    state = read_state(path)
    if state is None:
        return []
    entries: list[dict[str, Any]] = state["entries"]
    results = restore_entries(entries)
    _settle(path, state, entries, results)
    return results


def _settle(
    path: Path, state: dict[str, Any], entries: list[dict[str, Any]], results: list[RestoreResult]
) -> None:
    failed = [e for e, r in zip(entries, results, strict=True) if not r.ok]
    if failed:
        _write_atomic(path, {**state, "entries": failed})
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class PowerCapGuard:
    def __init__(self, state_path: str | Path | None = None) -> None:
        self.state_path = Path(state_path) if state_path else default_state_path()
        self._entries: list[dict[str, Any]] = []  # what the file holds, originals
        self._meters: dict[tuple[str, str], Meter] = {}  # live meters by (meter, device)
        self._lock = threading.RLock()  # reentrant: a signal may land mid-apply
        self._prev_handlers: dict[int, Any] = {}
        self._atexit = False
        self.results: list[RestoreResult] = []

    # -- changing limits -------------------------------------------------------------
    def apply(self, meter: Meter, device: str, watts: float) -> float:
        """Set `device`'s limit to `watts` through `meter`, first saving the limit in
        force if this is the device's first change. Returns the limit it replaced
        (for the `knob` event's `previous`). Raises PowerCapError (one line)."""
        if not isinstance(meter, PowerCapControl):
            raise PowerCapError(f"meter {meter.name!r} has no power-cap control")
        with self._lock:
            record: dict[str, Any] = meter.power_limit_record(device)
            previous = float(record["limit_w"])
            key = (meter.name, device)
            fresh = key not in self._meters
            if fresh:
                self._save(record)
                self._meters[key] = meter
            try:
                meter.set_power_limit(device, watts)
            except BaseException:
                if fresh:  # nothing changed: forget it, so no stale file is left behind
                    self._forget(key)
                raise
            return previous

    def _save(self, record: dict[str, Any]) -> None:
        on_disk = read_state(self.state_path) if not self._entries else None
        if on_disk is not None:
            if holder_alive(on_disk):
                raise PowerCapError(
                    f"another wattflow run (pid {on_disk.get('pid')}) holds GPU power caps "
                    f"({self.state_path}); stop it first"
                )
            # A killed run left this: its entries are the true originals (what is in
            # force now is its cap). Keep them; restore them too at the end.
            self._entries = list(on_disk["entries"])
        if not any(_same_device(e, record) for e in self._entries):
            self._entries.append({**record, "saved_unix_s": time.time()})
        _write_atomic(
            self.state_path,
            {
                "version": STATE_VERSION,
                "pid": os.getpid(),
                "pid_start": _process_start(os.getpid()),
                "entries": self._entries,
            },
        )

    def _forget(self, key: tuple[str, str]) -> None:
        self._meters.pop(key, None)
        meter, device = key
        self._entries = [
            e for e in self._entries if not (e["meter"] == meter and e["device"] == device)
        ]
        if self._entries:
            state = self._state_or_empty() or {"version": STATE_VERSION}
            _write_atomic(self.state_path, {**state, "entries": self._entries})
        else:
            with contextlib.suppress(FileNotFoundError):
                self.state_path.unlink()

    def original_limit_w(self, meter: str, device: str) -> float | None:
        """The limit saved before the first change (for `power_cap=none`: put it back
        with `apply(meter, device, original)`); None if the device was never changed."""
        for e in self._entries:
            if e["meter"] == meter and e["device"] == device:
                return float(e["limit_w"])
        return None

    @property
    def active(self) -> bool:
        return bool(self._entries)

    # -- putting them back -------------------------------------------------------------
    def restore(self) -> list[RestoreResult]:
        """Put every saved limit back; delete the state file if all went back.
        Idempotent: a second call (atexit after __exit__) finds nothing to do."""
        with self._lock:
            entries, self._entries = self._entries, []
            if not entries:
                return []
            results = []
            for e in entries:
                meter = self._meters.get((e["meter"], e["device"]))
                results.append(self._restore_via_meter(meter, e) if meter else None)
            # Whatever the live meter could not do (closed, lost), try without it.
            todo = [e for e, r in zip(entries, results, strict=True) if r is None or not r.ok]
            fallback = iter(restore_entries(todo))
            final = [r if r is not None and r.ok else next(fallback) for r in results]
            self._meters.clear()
            _settle(self.state_path, self._state_or_empty(), entries, final)
            self.results += final
            return final

    def _state_or_empty(self) -> dict[str, Any]:
        try:
            return read_state(self.state_path) or {}
        except StateFileError:
            return {}  # rewritten whole below; restoring matters more than its old text

    @staticmethod
    def _restore_via_meter(meter: Meter, e: dict[str, Any]) -> RestoreResult | None:
        label = f"{e['device']} ({e['uuid']})" if e.get("uuid") else str(e["device"])
        try:
            meter.set_power_limit(str(e["device"]), float(e["limit_w"]))
        except Exception:
            return None
        return RestoreResult(label, float(e["limit_w"]), True, "restored")

    # -- exit paths ----------------------------------------------------------------------
    def install(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> None:
        """Restore at interpreter exit and on `signals` (whose default action would end
        the process without unwinding). A handler restores first, then chains to the
        previous Python handler, or raises SystemExit(128+signum) so `finally` blocks
        and the session writer still run. SIGINT needs nothing: KeyboardInterrupt (or
        asyncio's cancellation on Ctrl-C) unwinds through `__exit__`."""
        if not self._atexit:
            atexit.register(self.restore)
            self._atexit = True
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in signals:
            if sig not in self._prev_handlers:
                self._prev_handlers[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        if self._atexit:
            atexit.unregister(self.restore)
            self._atexit = False
        if threading.current_thread() is threading.main_thread():
            for sig, prev in self._prev_handlers.items():
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._prev_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.restore()
        prev = self._prev_handlers.get(signum)
        if callable(prev):
            prev(signum, frame)
        elif prev != signal.SIG_IGN:
            raise SystemExit(128 + signum)

    def __enter__(self) -> PowerCapGuard:
        self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.restore()
        finally:
            self.uninstall()
