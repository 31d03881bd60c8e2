"""Wall time from a termination signal to the process's exit, whatever the run is doing.

    python bench/signal_latency.py [--repeat 5] [--load K] [--scenarios abcdef]
                                   [--signals INT,TERM] [--settle S] [--out FILE.md]

docs/cli.md promises that SIGINT and SIGTERM stop a run within 2 s of wall time: the run
is asked to stop on its loop, and if it has not closed its session within 1.5 s the
stop watchdog (app/stop_watchdog.py) writes the `end` record itself and exits. For each
scenario below and each signal, `--repeat` times, this starts `wattflow run`, waits until
the run is in full flow (its session has grown past 50 KB, then --settle s more), sends
the signal, and measures the wall time until the process
has exited (a pidfd becomes readable: the exit itself, not the parent's reaping). Then
it checks that the session file's last line is the `end` record, and whether that record
was written by the watchdog (its summary has `closed_by`) or by the normal path.

Scenarios:
  a  flood: --headless --fast --duration 86400 --rate 10000
  b  saturated virtual-time loop, no flood: --headless --fast --duration 86400
     --workload interactive --rate 50 --batch-limit 256
  c  smallest poll interval: --headless --fast --duration 86400 --poll-interval 0.01
  d  wall clock: --headless --workload sequential --duration 600
  e  stdout a pipe nobody reads: (a) with stdout a pipe that is never read. The
     headless printer writes one ~130-byte line a second, so a 64 KiB pipe would take
     ~8 minutes to fill; the pipe is shrunk to one page (4 KiB) and filled before the
     start but for --pipe-room bytes, so the printer blocks after ~8 lines. The signal is
     sent 1 s after the run's main thread is seen blocked in write(2) on stdout
     (/proc/PID/syscall), or after --pipe-wait s.
  f  the dashboard in a terminal: (a) without --headless inside tmux (own tmux server,
     120x36); the wattflow process is found with pgrep -f on its session path.

`--load K` keeps K busy-loop processes (python -c 'while True: pass') running for the
whole measurement. Prints a markdown table (and writes it to --out if given). Run by
hand, never by CI; takes about 10 s per run (6 scenarios x 2 signals x repeat).
"""

from __future__ import annotations

import argparse
import array
import contextlib
import fcntl
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMISE_S = 2.0
KILL_AFTER_S = 20.0  # no answer by then: SIGKILL, and the run counts as a failure
FLOW_BYTES = 50_000  # "in full flow": the session file has grown past this

FLOOD = ["--headless", "--fast", "--duration", "86400", "--rate", "10000"]
SCENARIOS: dict[str, tuple[str, list[str]]] = {
    "a": ("flood (--fast --rate 10000)", FLOOD),
    "b": ("saturated virtual loop (interactive, --rate 50, --batch-limit 256)",
          ["--headless", "--fast", "--duration", "86400", "--workload", "interactive",
           "--rate", "50", "--batch-limit", "256"]),
    "c": ("smallest poll interval (--fast --poll-interval 0.01)",
          ["--headless", "--fast", "--duration", "86400", "--poll-interval", "0.01"]),
    "d": ("wall clock (sequential, --duration 600)",
          ["--headless", "--workload", "sequential", "--duration", "600"]),
    "e": ("stdout a pipe nobody reads, printer blocked (flood)", FLOOD),
    "f": ("dashboard in tmux (flood)", ["--fast", "--duration", "86400", "--rate", "10000"]),
}
SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM}


def wattflow_cmd() -> list[str]:
    script = Path(sys.executable).parent / "wattflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app"]


@dataclass
class Trial:
    scenario: str
    sig: str
    latency_s: float | None  # None: did not exit within KILL_AFTER_S
    rc: int | None
    end_record: bool
    by_watchdog: bool
    note: str = ""
    end_written_s: float | None = None  # session file's last write, after the signal


@dataclass
class Cell:
    trials: list[Trial] = field(default_factory=list)


# -- helpers -------------------------------------------------------------------------
def last_record(path: Path) -> dict | None:
    """The session file's last complete JSON line, read from its tail."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 262_144))
            tail = f.read()
    except OSError:
        return None
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    if not lines:
        return None
    try:
        return json.loads(lines[-1])
    except ValueError:
        return None


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def wait_exit(pidfd: int, timeout_s: float) -> bool:
    """True once the process behind pidfd has exited (readable pidfd)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout_s * 1000))


def wait_flow(session: Path, alive, min_s: float, max_s: float, t0: float) -> str:
    """Wait until the session has grown past FLOW_BYTES (and at least min_s passed), or
    max_s passed. Returns a note when the flow was not reached."""
    while True:
        elapsed = time.monotonic() - t0
        if not alive():
            return "exited before the signal"
        if elapsed >= min_s and file_size(session) >= FLOW_BYTES:
            return ""
        if elapsed >= max_s:
            return f"session {file_size(session)} B at the signal"
        time.sleep(0.05)


def main_thread_syscall(pid: int) -> str:
    with contextlib.suppress(OSError):
        return "syscall " + " ".join(Path(f"/proc/{pid}/syscall").read_text().split()[:2])
    return "?"


def blocked_writing_stdout(pid: int) -> bool:
    """The main thread is in write(2) (x86-64 syscall 1) on fd 1."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return len(fields) >= 2 and fields[0] == "1" and int(fields[1], 16) == 1


def full_pipe(room: int) -> tuple[int, int, int]:
    """A pipe shrunk to one page and filled but for `room` bytes: (read fd, write fd,
    capacity)."""
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    cap = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
    os.write(w, b"x" * max(0, cap - room))
    return r, w, cap


def pipe_bytes(fd: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


# -- one trial -----------------------------------------------------------------------
def run_child(key: str, sig: int, session: Path, workdir: Path, settle_s: float,
              pipe_room: int, pipe_wait_s: float) -> Trial:
    args = [*wattflow_cmd(), "run", *SCENARIOS[key][1], "--session", str(session)]
    stderr = (workdir / "stderr").open("wb")
    note = ""
    rfd = wfd = -1
    if key == "e":
        rfd, wfd, cap = full_pipe(pipe_room)
        stdout: int = wfd
    else:
        stdout = subprocess.DEVNULL
    proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=stderr)
    if wfd >= 0:
        os.close(wfd)  # only the child holds the write end; nobody ever reads rfd
    t0 = time.monotonic()
    pidfd = os.pidfd_open(proc.pid)
    try:
        if key == "e":
            deadline = t0 + pipe_wait_s
            blocked = False
            while time.monotonic() < deadline and proc.poll() is None:
                if time.monotonic() - t0 > 2.0 and blocked_writing_stdout(proc.pid):
                    blocked = True
                    break
                time.sleep(0.1)
            time.sleep(1.0)  # let the blocked write sit a while
            state = ("blocked in write(1)" if blocked_writing_stdout(proc.pid)
                     else "NOT blocked: " + main_thread_syscall(proc.pid))
            note = (f"pipe {pipe_bytes(rfd)}/{cap} B, main thread {state} at "
                    f"{time.monotonic() - t0:.1f} s; session {file_size(session) / 1e6:.1f} MB")
            if not blocked:
                note += " (not blocked within --pipe-wait)"
        else:
            min_s, max_s = (3.0, 10.0) if key == "d" else (1.0, 30.0)
            note = wait_flow(session, lambda: proc.poll() is None, min_s, max_s, t0)
            time.sleep(settle_s)
        sent, sent_wall = time.monotonic(), time.time()
        os.kill(proc.pid, sig)
        exited = wait_exit(pidfd, KILL_AFTER_S)
        latency = time.monotonic() - sent if exited else None
        if not exited:
            proc.kill()
        rc = proc.wait()
    finally:
        os.close(pidfd)
        if rfd >= 0:
            os.close(rfd)
        stderr.close()
    return finish(key, sig, session, latency, rc, note, sent_wall, workdir / "stderr")


def run_tmux(sig: int, session: Path, workdir: Path, settle_s: float) -> Trial:
    sock = f"wattflow-bench-{os.getpid()}"
    rc_file = workdir / "rc"
    argv = [*wattflow_cmd(), "run", *SCENARIOS["f"][1], "--session", str(session)]
    inner = " ".join(_q(a) for a in argv)
    shell_cmd = f"cd {_q(str(ROOT))} && {inner}; echo $? > {_q(str(rc_file))}"
    subprocess.run(["tmux", "-L", sock, "-f", "/dev/null", "new-session", "-d", "-x", "120",
                    "-y", "36", shell_cmd], check=True)
    try:
        t0 = time.monotonic()
        pid = None
        while pid is None and time.monotonic() - t0 < 30:
            pid = find_pid(str(session))
            time.sleep(0.05)
        if pid is None:
            return Trial("f", signal.Signals(sig).name, None, None, False, False,
                         "wattflow process not found")
        pidfd = os.pidfd_open(pid)
        try:
            note = wait_flow(session, lambda: not wait_exit(pidfd, 0), 1.0, 30.0, t0)
            time.sleep(settle_s)
            sent, sent_wall = time.monotonic(), time.time()
            os.kill(pid, sig)
            exited = wait_exit(pidfd, KILL_AFTER_S)
            latency = time.monotonic() - sent if exited else None
            if not exited:
                os.kill(pid, signal.SIGKILL)
        finally:
            os.close(pidfd)
        rc = None
        for _ in range(100):  # the shell writes the exit code right after
            with contextlib.suppress(OSError, ValueError):
                rc = int(rc_file.read_text())
                break
            time.sleep(0.02)
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], stderr=subprocess.DEVNULL,
                       check=False)
    return finish("f", sig, session, latency, rc, note, sent_wall, None)


def _q(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def find_pid(session: str) -> int | None:
    """The wattflow process (not the shell around it) whose argv names the session."""
    out = subprocess.run(["pgrep", "-f", session], capture_output=True, text=True).stdout
    for line in out.split():
        with contextlib.suppress(OSError, ValueError):
            argv = Path(f"/proc/{int(line)}/cmdline").read_bytes().split(b"\0")
            if b"--session" in argv and session.encode() in argv:
                return int(line)
    return None


def finish(key: str, sig: int, session: Path, latency: float | None, rc: int | None,
           note: str, sent_wall: float, stderr: Path | None) -> Trial:
    rec = last_record(session)
    try:
        written: float | None = session.stat().st_mtime - sent_wall
    except OSError:
        written = None
    end = rec is not None and rec.get("kind") == "end"
    by_wd = end and "closed_by" in (rec.get("summary") or {})
    if rec is not None and not end:
        note = (note + "; " if note else "") + f"last record kind {rec.get('kind')!r}, " \
            f"session {file_size(session)} B"
    slow = latency is None or latency > PROMISE_S or not end
    if slow and stderr is not None:
        with contextlib.suppress(OSError):
            last = [ln for ln in stderr.read_text(errors="replace").splitlines() if ln.strip()]
            if last:
                note = (note + "; " if note else "") + f"stderr: {last[-1].strip()}"
    return Trial(key, signal.Signals(sig).name, latency, rc, end, by_wd, note, written)


# -- the table -----------------------------------------------------------------------
def table(cells: dict[tuple[str, str], Cell], repeat: int) -> str:
    rows = ["| scenario | signal | median s | max s | exit codes | end record | closed by |",
            "|---|---|---|---|---|---|---|"]
    for (key, sig), cell in cells.items():
        lat = [t.latency_s for t in cell.trials]
        ok = [x for x in lat if x is not None]
        med = f"{statistics.median(ok):.2f}" if ok else "-"
        mx = f"> {KILL_AFTER_S:.0f}" if None in lat else f"{max(ok):.2f}"
        if any(x is None or x > PROMISE_S for x in lat):
            mx = f"**{mx}**"
        rcs = ",".join(sorted({str(t.rc) for t in cell.trials}))
        ends = sum(t.end_record for t in cell.trials)
        end = f"{ends}/{len(cell.trials)}" if ends == len(cell.trials) else \
            f"**{ends}/{len(cell.trials)}**"
        wd = sum(t.by_watchdog for t in cell.trials)
        normal = ends - wd
        by = ", ".join(p for p in (f"{normal} normal" if normal else "",
                                   f"{wd} watchdog" if wd else "") if p) or "-"
        rows.append(f"| {key}: {SCENARIOS[key][0]} | SIG{sig} | {med} | {mx} | {rcs} | {end} | "
                    f"{by} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--load", type=int, default=0, help="busy-loop processes meanwhile")
    p.add_argument("--scenarios", default="abcdef")
    p.add_argument("--signals", default="INT,TERM")
    p.add_argument("--pipe-room", type=int, default=1024,
                   help="scenario e: bytes left free in the pipe (~8 progress lines)")
    p.add_argument("--pipe-wait", type=float, default=30.0,
                   help="scenario e: most seconds to wait for the printer to block")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds to let the run flow once its session passed 50 KB")
    p.add_argument("--out", help="also write the table and details to this markdown file")
    p.add_argument("--keep", action="store_true", help="keep the session files")
    args = p.parse_args()
    keys = [k for k in args.scenarios.replace(",", "") if k in SCENARIOS]
    sigs = [s.strip().upper().removeprefix("SIG") for s in args.signals.split(",")]
    if "f" in keys and shutil.which("tmux") is None:
        print("tmux not found: skipping scenario f", file=sys.stderr)
        keys.remove("f")

    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.load)]
    tmp = Path(tempfile.mkdtemp(prefix="signal-latency-"))
    cells: dict[tuple[str, str], Cell] = {}
    load_avgs = [os.getloadavg()[0]]
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        for key in keys:
            for sig_name in sigs:
                cell = cells.setdefault((key, sig_name), Cell())
                for i in range(args.repeat):
                    workdir = tmp / f"{key}-{sig_name}-{i}"
                    workdir.mkdir()
                    session = workdir / "session.jsonl"
                    sig = SIGNALS[sig_name]
                    trial = (run_tmux(sig, session, workdir, args.settle) if key == "f"
                             else run_child(key, sig, session, workdir, args.settle,
                                            args.pipe_room, args.pipe_wait))
                    cell.trials.append(trial)
                    lat = "none" if trial.latency_s is None else f"{trial.latency_s:.3f} s"
                    wr = "-" if trial.end_written_s is None else f"{trial.end_written_s:+.2f} s"
                    print(f"{key} SIG{sig_name} #{i + 1}: {lat}, rc {trial.rc}, last write {wr}, "
                          f"end {trial.end_record}, watchdog {trial.by_watchdog}"
                          f"{'  (' + trial.note + ')' if trial.note else ''}",
                          file=sys.stderr, flush=True)
                    load_avgs.append(os.getloadavg()[0])
                    if not args.keep:
                        session.unlink(missing_ok=True)
    finally:
        for proc in load:
            proc.kill()
            proc.wait()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    md = table(cells, args.repeat)
    findings = [t for c in cells.values() for t in c.trials
                if t.latency_s is None or t.latency_s > PROMISE_S or not t.end_record]
    header = (f"{started}, {platform.node()}, {os.cpu_count()} CPUs, Python "
              f"{platform.python_version()}, --repeat {args.repeat}, --load {args.load}, "
              f"1-min load average {min(load_avgs):.1f}-{max(load_avgs):.1f}")
    lines = [header, "", md, ""]
    if findings:
        lines.append(f"Over {PROMISE_S:g} s or without an end record:")
        for t in findings:
            lat = "no exit" if t.latency_s is None else f"{t.latency_s:.2f} s"
            wr = "-" if t.end_written_s is None else f"{t.end_written_s:+.2f} s"
            lines.append(f"- {t.scenario} {t.sig}: {lat} to exit, session's last write at {wr},"
                         f" rc {t.rc}, end record {t.end_record}, watchdog {t.by_watchdog}"
                         f"{' (' + t.note + ')' if t.note else ''}")
    else:
        lines.append(f"Every run exited within {PROMISE_S:g} s with its end record.")
    notes = sorted({f"{t.scenario}: {t.note}" for c in cells.values() for t in c.trials
                    if t.note and t.scenario == "e"})
    if notes:
        lines += ["", "Scenario e, at the signal:", *[f"- {n}" for n in notes]]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
