"""Shared by the soak scripts (soak_virtual.py, soak_faults.py): run `wattflow run
--headless` as a watched subprocess (resident memory sampled every few wall seconds,
progress parsed from its `t=   123.4s ...` lines, a deadline so that a hang is reported
instead of waited on), and check the bookkeeping of the session it wrote:

  R1  every submitted request id ends in exactly one terminal request event
      (phase finished, or failed; failed with reason "run ended" counts as cancelled),
      and no terminal event lacks its submission;
  R2  the end record's summary counts (requests_submitted / _finished / _failed /
      _cancelled, and requests_in_flight == 0) match the events;
  W1  every started workflow ends in exactly one workflow event (finished or failed);
      a shed arrival (phase "shed": dropped under overload, never started) has that one
      event only;
  W2  the end record's workflow counts (workflows_finished / _failed / _shed) match;
  S1  the session is complete: an end record, no cut last line, no reader warnings.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT_DIR = ROOT / "bench" / "out"
PROGRESS = re.compile(r"^t=\s*([0-9]+(?:\.[0-9]*)?)s")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def wattflow_command() -> list[str]:
    """`wattflow` from this Python's environment (the console script), else `python -m app`."""
    script = Path(sys.executable).parent / "wattflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app"]


# -- resident memory --------------------------------------------------------------------
def read_proc(pid: int) -> tuple[int, int, float] | None:
    """(RSS KiB, peak RSS KiB, CPU seconds) of a live process; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return _read_psutil(pid) if not Path("/proc/self/status").exists() else None
    fields: dict[str, int] = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    if "VmRSS" not in fields:  # a zombie: it has exited, not yet reaped
        return None
    after = stat[stat.rfind(")") + 2:].split()
    cpu_s = (int(after[11]) + int(after[12])) / _CLK_TCK  # utime, stime
    return fields["VmRSS"], fields.get("VmHWM", fields["VmRSS"]), cpu_s


def _read_psutil(pid: int) -> tuple[int, int, float] | None:
    try:
        import psutil
    except ImportError:
        return None
    try:
        p = psutil.Process(pid)
        mem = p.memory_info()
        cpu = p.cpu_times()
    except psutil.Error:
        return None
    peak = getattr(mem, "peak_wset", None) or mem.rss
    return mem.rss // 1024, peak // 1024, cpu.user + cpu.system


@dataclass(slots=True)
class RssSample:
    wall_s: float  # since the subprocess started
    t_s: float | None  # the run's time reached (its last progress line), None before one
    rss_kib: int
    hwm_kib: int
    cpu_s: float


@dataclass
class WatchedRun:
    cmd: list[str]
    returncode: int | None
    wall_s: float
    hung: bool  # still running at the deadline: stopped by us
    samples: list[RssSample]
    last_t_s: float | None
    progress_lines: int
    stdout_path: Path
    stderr_path: Path
    tail: list[str] = field(default_factory=list)  # stdout after the last progress line


def watch(cmd: list[str], *, stdout_path: Path, stderr_path: Path, interval_s: float,
          deadline_s: float, target_t_s: float | None = None, log: TextIO = sys.stdout
          ) -> WatchedRun:
    """Run `cmd` (cwd: the repository), sampling its memory every `interval_s` wall
    seconds and printing one line per sample. At `deadline_s` it is sent SIGINT (the
    run closes its session), 30 s later SIGKILL: either way the run counts as hung."""
    stdout_path.parent.mkdir(parents=True, exist_ok=True)
    last_t: list[float | None] = [None]
    count = [0]
    tail: list[str] = []
    t0 = time.monotonic()
    with open(stderr_path, "wb") as err, open(stdout_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                                bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert proc.stdout is not None
        pipe = proc.stdout

        def reader() -> None:
            for line in pipe:
                out.write(line)
                m = PROGRESS.match(line)
                if m:
                    last_t[0] = float(m.group(1))
                    count[0] += 1
                    tail.clear()
                else:
                    tail.append(line.rstrip("\n"))
            out.flush()

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        samples: list[RssSample] = []
        hung = False
        next_at = 0.0
        while proc.poll() is None:
            now = time.monotonic() - t0
            if now >= next_at:
                got = read_proc(proc.pid)
                if got is not None:
                    s = RssSample(round(now, 2), last_t[0], *got)
                    samples.append(s)
                    print(_sample_line(s, target_t_s), file=log, flush=True)
                next_at += interval_s
            if now >= deadline_s and not hung:
                hung = True
                print(f"!! still running after {deadline_s:.0f} s wall: SIGINT", file=log)
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    print("!! no exit 30 s after SIGINT: SIGKILL", file=log)
                    proc.kill()
                break
            time.sleep(min(0.2, max(0.01, next_at - now)))
        proc.wait()
        wall = time.monotonic() - t0
        thread.join(10)
    return WatchedRun(cmd, proc.returncode, wall, hung, samples, last_t[0], count[0],
                      stdout_path, stderr_path, tail)


def _mib(kib: int) -> str:
    return f"{kib / 1024:7.1f}"


def _sample_line(s: RssSample, target: float | None) -> str:
    t = "-" if s.t_s is None else f"{s.t_s:9.1f}"
    pct = f" ({100 * s.t_s / target:5.1f}%)" if target and s.t_s is not None else ""
    return (f"wall {s.wall_s:8.1f}s  t={t}s{pct}  RSS {_mib(s.rss_kib)} MiB"
            f"  peak {_mib(s.hwm_kib)} MiB  CPU {s.cpu_s:8.1f}s")


# -- memory over the run ----------------------------------------------------------------
def sample_at(samples: list[RssSample], frac: float, target_t_s: float) -> RssSample | None:
    """The first sample at or past `frac` of the run (by the run's own time); the last
    sample for 1.0 (the run's end, drain included)."""
    if not samples:
        return None
    if frac >= 1.0:
        return samples[-1]
    for s in samples:
        if s.t_s is not None and s.t_s >= frac * target_t_s:
            return s
    return None


def memory_report(samples: list[RssSample], target_t_s: float, tolerance: float
                  ) -> dict[str, Any]:
    at = {f"{int(f * 100)}%": sample_at(samples, f, target_t_s) for f in (0.1, 0.5, 0.9, 1.0)}
    rss = {k: (s.rss_kib / 1024 if s else None) for k, s in at.items()}
    peak = max((s.hwm_kib for s in samples), default=0) / 1024
    growth = None
    if rss["50%"] and rss["100%"]:
        growth = (rss["100%"] - rss["50%"]) / rss["50%"]
    # Least-squares slope of RSS over the second half of the run, MiB per hour of run time.
    half = [s for s in samples if s.t_s is not None and s.t_s >= 0.5 * target_t_s]
    slope = None
    if len(half) >= 3:
        xs = [s.t_s for s in half]
        ys = [s.rss_kib / 1024 for s in half]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)  # type: ignore[arg-type]
        sxx = sum((x - mx) ** 2 for x in xs)  # type: ignore[operator]
        if sxx > 0:
            slope = 3600 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx  # type: ignore[operator]
    return {
        "rss_mib": rss,
        "at_t_s": {k: (s.t_s if s else None) for k, s in at.items()},
        "peak_rss_mib": peak,
        "growth_50_100": growth,
        "slope_mib_per_run_hour_second_half": slope,
        "tolerance": tolerance,
        "bounded": growth is not None and growth <= tolerance,
    }


# LiveStats keeps its quantiles in DDSketches of bounded size (app/core/quantiles.py):
# nothing grows per finished request or workflow any more (it did with the exact sorted
# lists before issue 16), so all growth is residual.
QUANTILE_BYTES_PER_REQUEST = 0
QUANTILE_BYTES_PER_WORKFLOW = 0


def explain_growth(mem: dict[str, Any], sess: dict[str, Any]) -> None:
    """Add to `mem` how much of the 50%->100% growth the exact quantiles account for, and
    the growth left over (`residual_growth_50_100`, a fraction of RSS at 50%)."""
    t50, t100 = mem["at_t_s"]["50%"], mem["at_t_s"]["100%"]
    by = sess.get("finished_by") or {}
    if t50 is None or t100 is None or t50 not in by or t100 not in by:
        mem["quantile_growth_mib"] = mem["residual_growth_50_100"] = None
        return
    req = by[t100]["requests"] - by[t50]["requests"]
    wf = by[t100]["workflows"] - by[t50]["workflows"]
    q = (req * QUANTILE_BYTES_PER_REQUEST + wf * QUANTILE_BYTES_PER_WORKFLOW) / 2**20
    mem["finished_50_100"] = {"requests": req, "workflows": wf}
    mem["quantile_growth_mib"] = q
    r50, r100 = mem["rss_mib"]["50%"], mem["rss_mib"]["100%"]
    mem["residual_growth_50_100"] = (r100 - r50 - q) / r50 if r50 and r100 else None


def growth_text(mem: dict[str, Any]) -> str:
    r50, r100 = mem["rss_mib"]["50%"], mem["rss_mib"]["100%"]
    if r50 is None or r100 is None:
        return "- (no samples at 50% and 100%)"
    q = mem.get("quantile_growth_mib")
    rest = mem.get("residual_growth_50_100")
    fin = (mem.get("finished_50_100") or {}).get("requests")
    text = f"{r100 - r50:+.1f} MiB ({100 * (r100 - r50) / r50:+.1f}%)"
    if q is not None and rest is not None:
        text += (f", of which the exact quantiles' storage ~{q:.1f} MiB ({fin:,} requests"
                 f" finished); the rest {rest * r50:+.1f} MiB ({100 * rest:+.1f}%)")
    return text


def rss_table(samples: list[RssSample], target_t_s: float, rows: int = 10) -> list[str]:
    """A markdown table of RSS against progress: one row per 1/rows of the run, and the end."""
    lines = ["| progress | run time s | wall s | RSS MiB | peak RSS MiB | CPU s |",
             "|---|---|---|---|---|---|"]
    picked: list[tuple[str, RssSample]] = []
    if samples:
        picked.append(("start", samples[0]))
    for i in range(1, rows):
        s = sample_at(samples, i / rows, target_t_s)
        if s is not None and all(s is not p for _, p in picked):
            picked.append((f"{100 * i // rows}%", s))
    if samples:
        picked.append(("end", samples[-1]))  # the last sample, even if also a row above
    for label, s in picked:
        t = "-" if s.t_s is None else f"{s.t_s:.0f}"
        lines.append(f"| {label} | {t} | {s.wall_s:.0f} | {s.rss_kib / 1024:.1f} |"
                     f" {s.hwm_kib / 1024:.1f} | {s.cpu_s:.1f} |")
    return lines


# -- the session's bookkeeping -------------------------------------------------------------
def check_session(path: Path, max_examples: int = 10, at_t_s: tuple[float, ...] = ()
                  ) -> dict[str, Any]:
    """Stream the session (app.core.session_reader) and check R1, R2, W1, W2, S1. Also
    counts the requests and workflows finished by each time in `at_t_s`."""
    from app.core.events import RUN_ENDED, RequestEvent, WorkflowEvent
    from app.core.session_reader import SessionError, open_session

    out: dict[str, Any] = {"path": str(path), "violations": [], "ok": False}
    violations: list[str] = out["violations"]
    try:
        stream = open_session(path)
        submitted: dict[str, int] = {}
        ended: dict[str, int] = {}
        outcome = Counter[str]()
        reasons = Counter[str]()
        wf_started: dict[str, int] = {}
        wf_ended: dict[str, int] = {}
        wf_shed: dict[str, int] = {}
        finished_by = [[0, 0] for _ in at_t_s]  # requests, workflows finished by then
        wf_outcome = Counter[str]()
        early_cancel = 0  # "run ended" before the run's deadline
        first_early: tuple[float, str] | None = None
        duration = stream.header.config.get("duration_s")
        events = 0
        for ev in stream:
            events += 1
            if isinstance(ev, RequestEvent):
                rid = ev.request_id
                if ev.phase == "submitted":
                    submitted[rid] = submitted.get(rid, 0) + 1
                elif ev.phase in ("finished", "failed"):
                    ended[rid] = ended.get(rid, 0) + 1
                    if ev.phase == "finished":
                        outcome["finished"] += 1
                        for i, t in enumerate(at_t_s):
                            if ev.t_s <= t:
                                finished_by[i][0] += 1
                    elif ev.reason == RUN_ENDED:
                        outcome["cancelled"] += 1
                        if duration is not None and ev.t_s < duration:
                            early_cancel += 1
                            if first_early is None:
                                first_early = (ev.t_s, rid)
                    else:
                        outcome["failed"] += 1
                        reasons[ev.reason or ""] += 1
            elif isinstance(ev, WorkflowEvent):
                wid = ev.workflow_id
                if ev.phase == "started":
                    wf_started[wid] = wf_started.get(wid, 0) + 1
                elif ev.phase == "shed":
                    wf_shed[wid] = wf_shed.get(wid, 0) + 1
                    wf_outcome["shed"] += 1
                else:
                    wf_ended[wid] = wf_ended.get(wid, 0) + 1
                    wf_outcome[ev.phase if ev.reason != RUN_ENDED else "cancelled"] += 1
                    if ev.phase == "finished":
                        for i, t in enumerate(at_t_s):
                            if ev.t_s <= t:
                                finished_by[i][1] += 1
    except SessionError as exc:
        violations.append(f"S1 session unreadable: {exc}")
        return out

    end = stream.end
    out.update(events=events, truncated=stream.truncated, warnings=list(stream.warnings),
               end_reason=end.reason if end else None, last_t_s=stream.last_t_s,
               size_bytes=path.stat().st_size)
    if end is None:
        violations.append("S1 no end record")
    if stream.truncated or stream.warnings:
        violations.append(f"S1 reader: truncated={stream.truncated} warnings={stream.warnings}")

    # R1: each submitted id ends exactly once; nothing ends that was not submitted.
    dup_sub = [r for r, n in submitted.items() if n > 1]
    no_end = [r for r in submitted if r not in ended]
    multi_end = [r for r, n in ended.items() if n > 1]
    orphan = [r for r in ended if r not in submitted]
    for name, ids in (("submitted more than once", dup_sub), ("never ended", no_end),
                      ("ended more than once", multi_end), ("ended, never submitted", orphan)):
        if ids:
            violations.append(f"R1 {len(ids)} request id(s) {name}, e.g. {ids[:max_examples]}")
    counted = {"requests_submitted": len(submitted), "requests_finished": outcome["finished"],
               "requests_failed": outcome["failed"], "requests_cancelled": outcome["cancelled"]}
    out["events_count"] = counted
    out["failure_reasons"] = dict(reasons.most_common())
    out["cancelled_before_deadline"] = early_cancel
    out["first_cancelled_before_deadline"] = first_early

    # R2: the end record's counts are the events'.
    if end is not None:
        s = end.summary
        recorded = {k: s.get(k) for k in counted}
        recorded["requests_in_flight"] = s.get("requests_in_flight")
        out["end_summary"] = recorded
        for k, v in counted.items():
            if recorded[k] != v:
                violations.append(f"R2 end summary {k}={recorded[k]} but the events give {v}")
        if recorded["requests_in_flight"] not in (0, None):
            violations.append(f"R2 end summary requests_in_flight="
                              f"{recorded['requests_in_flight']} (expected 0)")
        summary_reasons = s.get("failure_reasons")
        out["end_failure_reasons"] = summary_reasons
        if isinstance(summary_reasons, dict) and summary_reasons != dict(reasons):
            violations.append(f"R2 end summary failure_reasons {summary_reasons} "
                              f"!= events {dict(reasons)}")

    # W1: workflows.
    wf_no_end = [w for w in wf_started if w not in wf_ended]
    wf_multi = [w for w, n in wf_ended.items() if n > 1]
    wf_orphan = [w for w in wf_ended if w not in wf_started]
    shed_bad = [w for w, n in wf_shed.items() if n > 1 or w in wf_started or w in wf_ended]
    for name, ids in (("never ended", wf_no_end), ("ended more than once", wf_multi),
                      ("ended, never started", wf_orphan),
                      ("shed and also started or ended, or shed twice", shed_bad)):
        if ids:
            violations.append(f"W1 {len(ids)} workflow(s) {name}, e.g. {ids[:max_examples]}")
    out["workflows"] = {"started": len(wf_started), **dict(wf_outcome)}
    out["workflows_never_ended"] = wf_no_end[:max_examples]
    out["finished_by"] = {t: {"requests": r, "workflows": w}
                          for t, (r, w) in zip(at_t_s, finished_by, strict=True)}
    # W2: the end record's workflow counts, where it has them.
    if end is not None:
        wf_counted = {"workflows_finished": wf_outcome["finished"],
                      "workflows_failed": wf_outcome["failed"], "workflows_shed": len(wf_shed)}
        for k, v in wf_counted.items():
            if k in end.summary and end.summary[k] != v:
                violations.append(f"W2 end summary {k}={end.summary[k]} but the events give {v}")
        out["end_workflows"] = {k: end.summary.get(k) for k in wf_counted}
    out["ok"] = not violations
    return out


# -- stderr ------------------------------------------------------------------------------
STDERR_FATAL = ("Traceback", "Future exception was never retrieved")
STDERR_SUSPECT = ("Task was destroyed but it is pending", "Exception ignored", "Unclosed",
                  "unclosed", "ResourceWarning", "Task exception was never retrieved")


def verdict_lines(sess: dict[str, Any], err: dict[str, Any], problems: list[str],
                  run: WatchedRun, target_t_s: float, rss_title: str) -> list[str]:
    """The end of both soaks' reports: workflows, stderr, invariants, the verdict, the
    RSS table and wattflow's closing lines."""
    lines = [
        f"- workflows (events): {sess.get('workflows')}; end record:"
        f" {sess.get('end_workflows')}",
        f"- stderr: {err['bytes']} bytes; fatal {err['fatal'] or 'none'};"
        f" suspect {err['suspect'] or 'none'}",
        f"- invariants: {'all hold' if sess['ok'] else 'VIOLATED'}",
        *(f"  - {v}" for v in sess["violations"]),
        f"- verdict: {'PASS' if not problems else 'FAIL: ' + '; '.join(problems)}",
        "",
        rss_title,
        "",
        *rss_table(run.samples, target_t_s),
        "",
    ]
    if run.tail:
        lines += ["wattflow's closing lines:", "", "```", *run.tail[-12:], "```", ""]
    return lines


def check_stderr(path: Path) -> dict[str, Any]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return {
        "bytes": len(text),
        "fatal": {p: text.count(p) for p in STDERR_FATAL if p in text},
        "suspect": {p: text.count(p) for p in STDERR_SUSPECT if p in text},
        "head": text[:2000],
    }


def host_line() -> str:
    load = ""
    with contextlib.suppress(OSError):
        load = " load " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}{load}"


def code_version() -> str:
    """The commit the run's code is at, and the code files changed on top of it (other
    people edit the working tree while a soak runs: a subprocess runs what is there)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--", "app", "engines",
                                 "workloads", "meters"], cwd=ROOT, text=True,
                                capture_output=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = sorted(line[3:] for line in status if line.strip())
    return head + (f" + uncommitted changes to {', '.join(dirty)}" if dirty else "")


def samples_json(samples: list[RssSample]) -> list[dict[str, Any]]:
    return [asdict(s) for s in samples]
