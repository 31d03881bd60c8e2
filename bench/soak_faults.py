"""Soak under faults (issue 8): a wall-clock run of the `openai` engine against the
loopback server (tests/fakes/loopback_server.py, in this process, on its own thread)
while the server injects a seeded random mix of faults:

  ok       a normal streamed completion (first token after 50 ms, then one per 10 ms)
  http500  an HTTP 500 error body
  cut      a few tokens (0-16), then the connection is dropped mid-stream
  stall    a few tokens, then silence for 3x the client's idle timeout
           (`-E timeout_s=`): the engine gives up with "stalled: no data for ..."
  slow     a few tokens, then one a second: under the idle timeout, so it is the
           runner's `--request-timeout` that ends it
  drop     the connection is dropped before any answer

`wattflow run --headless --engine openai --url http://127.0.0.1:PORT/v1 ...` runs as a
watched subprocess (resident memory sampled every few seconds, a deadline so a hang is
reported, not waited on). Afterwards: the exit code, stderr (no "Traceback", no "Future
exception was never retrieved"), the session's bookkeeping (soak_common: every submitted
request ends exactly once as finished / failed / cancelled, the end record's counts match
the events, every workflow ends once), the client's memory over the run, and the faults
the server injected against the failures the client recorded.

    python bench/soak_faults.py                  # 10 minutes
    python bench/soak_faults.py --minutes 1

Writes bench/out/soak_faults-<tag>.{md,json,jsonl,stdout,stderr}; exit 1 if a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import resource
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak_common import (
    OUT_DIR,
    ROOT,
    check_session,
    check_stderr,
    code_version,
    explain_growth,
    growth_text,
    host_line,
    memory_report,
    samples_json,
    verdict_lines,
    watch,
    wattflow_command,
)

from tests.fakes.loopback_server import Behaviour, FakeOpenAIServer

DEFAULT_MIX = "ok=80,http500=6,cut=6,stall=4,slow=2,drop=2"


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in ("ok", "http500", "cut", "stall", "slow", "drop"):
            raise SystemExit(f"--mix: unknown fault {name!r}")
        mix[name] = float(weight)
    return mix


class FaultPlan:
    """Picks each request's fault from the mix with a seeded generator (on the server's
    thread, in arrival order) and counts what it picked."""

    def __init__(self, mix: dict[str, float], seed: int, max_before: int = 16) -> None:
        self.names = list(mix)
        self.weights = [mix[n] for n in self.names]
        self.rng = random.Random(seed)
        self.max_before = max_before
        self.picked: Counter[str] = Counter()

    def __call__(self, number: int) -> tuple[str, int]:
        name = self.rng.choices(self.names, self.weights)[0]
        before = self.rng.randint(0, self.max_before)
        self.picked[name] += 1
        return ("" if name == "ok" else name), before


class CountErrors(logging.Handler):
    """The server's "Error handling request" log lines (a write to a connection the
    client has closed, e.g. after a timeout), counted instead of printed."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self.counts[f"{type(exc).__name__}: {exc}" if exc else record.getMessage()] += 1


class ServerThread:
    """The loopback server on an event loop of its own, in a daemon thread."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = FakeOpenAIServer(behaviour, keep_bodies=False)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> str:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self.server.url

    def call(self, fn: Any) -> Any:
        """Run fn() on the server's loop (its counters are only touched there)."""
        async def wrap() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# failure reasons the client records for each fault (engines/openai/engine.py, runner)
def reason_kind(reason: str) -> str:
    if reason.startswith("HTTP 500"):
        return "http500"
    if reason == "stream cut before finish":
        return "cut"
    if reason.startswith("stalled: no data"):
        return "stall"
    if reason.startswith("timeout after"):
        return "slow"
    if reason.startswith("server disconnected") and "before answering" in reason:
        return "drop"
    return "other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="wall minutes (default 10)")
    ap.add_argument("--workload", default="composite",
                    help="composite (default), a built-in, or workloads/examples/*.toml")
    ap.add_argument("--rate", type=float, default=2.0,
                    help="workflow arrivals per second (default 2: ~3.5 requests/s and"
                         " ~20-30 streams at once with composite; 0: the workload's own)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="workload parameter, passed on")
    ap.add_argument("--mix", default=DEFAULT_MIX, help=f"fault weights (default {DEFAULT_MIX})")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--idle-timeout", type=float, default=2.0,
                    help="the engine's idle timeout, -E timeout_s= (default 2 s)")
    ap.add_argument("--request-timeout", type=float, default=20.0,
                    help="the runner's --request-timeout (default 20 s)")
    ap.add_argument("--token-s", type=float, default=0.01,
                    help="seconds between streamed tokens (default 0.01)")
    ap.add_argument("--interval", type=float, default=5.0,
                    help="wall seconds between memory samples (default 5)")
    ap.add_argument("--tolerance", type=float, default=0.10,
                    help="RSS growth allowed from 50%% to 100%% of the run, beyond what"
                         " the exact quantiles keep (default 0.10)")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--tag", default=None, help="file name tag (default MINUTESmin)")
    args = ap.parse_args()

    duration = args.minutes * 60
    tag = args.tag or f"{args.minutes:g}min"
    base = args.out / f"soak_faults-{tag}"

    def out(ext: str) -> Path:
        return base.parent / f"{base.name}.{ext}"

    session = out("jsonl")
    session.unlink(missing_ok=True)

    server_log = logging.getLogger("aiohttp.server")
    server_errors = CountErrors()
    server_log.addHandler(server_errors)
    server_log.propagate = False
    plan = FaultPlan(parse_mix(args.mix), args.seed)
    behaviour = Behaviour(first_token_s=0.05, token_s=args.token_s, fault_plan=plan,
                          stall_s=3 * args.idle_timeout, slow_token_s=min(1.0, args.idle_timeout / 2))
    server = ServerThread(behaviour)
    url = server.start()
    port = url.rsplit(":", 1)[1]
    run_args = ["run", "--headless", "--engine", "openai", "--url", f"{url}/v1",
                "--workload", args.workload,
                *(["--rate", f"{args.rate:g}"] if args.rate else []),
                *[a for kv in args.param for a in ("-p", kv)],
                "--duration", f"{duration:g}", "--meter", "none",
                "-E", f"timeout_s={args.idle_timeout:g}",
                "--request-timeout", f"{args.request_timeout:g}",
                "--seed", str(args.seed), "--session", str(session)]
    cmd = [*wattflow_command(), *run_args]
    shown = " ".join(["wattflow", *run_args]).replace(str(ROOT) + "/", "")
    print(f"# soak_faults: {shown}\n# server: 127.0.0.1:{port}, mix {args.mix}, seed {args.seed}"
          f"\n# {host_line()}", flush=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    version = code_version()
    # Deadline: the duration, the drain (30 s), a request timeout, and slack for a busy box.
    deadline = duration + 30 + args.request_timeout + 60
    try:
        run = watch(cmd, stdout_path=out("stdout"), stderr_path=out("stderr"),
                    interval_s=args.interval, deadline_s=deadline, target_t_s=duration)
    finally:
        seen = server.call(lambda: (server.server.seen.requests, server.server.seen.max_in_flight,
                                    server.server.seen.in_flight, dict(plan.picked)))
        server.stop()
    requests_seen, max_in_flight, in_flight_left, picked = seen
    ru = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu = ru.ru_utime + ru.ru_stime  # the server's thread, plus the (idle) watcher
    host_after = host_line()
    mem = memory_report(run.samples, duration, args.tolerance)
    print("# checking the session ...", flush=True)
    sess = check_session(session, at_t_s=tuple(
        t for t in (mem["at_t_s"]["50%"], mem["at_t_s"]["100%"]) if t is not None))
    explain_growth(mem, sess)
    residual = mem["residual_growth_50_100"]
    mem["bounded"] = residual is not None and residual <= args.tolerance
    err = check_stderr(run.stderr_path)

    # What the server injected against what the client recorded.
    recorded = Counter[str]()
    for reason, n in (sess.get("failure_reasons") or {}).items():
        recorded[reason_kind(reason)] += n
    compare = {k: (picked.get(k, 0), recorded.get(k, 0))
               for k in ("http500", "cut", "stall", "slow", "drop", "other")}
    # A fault can go unrecorded when its request was cancelled first (a sibling's failure
    # ended its workflow): fewer recorded than injected is a note, more is a problem.
    mismatch = [k for k in ("http500", "cut", "stall", "drop") if compare[k][1] > compare[k][0]]
    unrecorded = {k: compare[k][0] - compare[k][1] for k in ("http500", "cut", "stall", "drop")
                  if compare[k][1] < compare[k][0]}

    problems: list[str] = []
    if run.hung:
        problems.append(f"HANG: still running {deadline:.0f} s after the start")
    if run.returncode != 0:
        problems.append(f"exit code {run.returncode}")
    if err["fatal"]:
        problems.append(f"stderr: {err['fatal']}")
    if not mem["bounded"]:
        problems.append(f"RSS not bounded: growth 50%->100% beyond exact-quantile storage"
                        f" {residual} > {args.tolerance}")
    if sess.get("end_reason") not in (None, "completed"):
        problems.append(f"run ended {sess['end_reason']!r}")
    if mismatch:
        problems.append("more failures recorded than faults injected for "
                        + ", ".join(f"{k} ({compare[k][0]} vs {compare[k][1]})" for k in mismatch))
    problems += sess["violations"]

    r = mem["rss_mib"]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    counts = sess.get("events_count") or {}
    lines = [
        f"# soak_faults {tag} ({started})",
        "",
        f"command: `{shown}` (server on an ephemeral port, in the soak's process)",
        f"machine: {host_line()} at the start; {host_after} at the end",
        f"code: {version}",
        f"server: first token 50 ms, then {args.token_s * 1000:g} ms/token; fault mix"
        f" {args.mix} (seed {args.seed}); stall {3 * args.idle_timeout:g} s; slow"
        f" {behaviour.slow_token_s:g} s/token",
        "",
        f"- wall {run.wall_s:.1f} s for {duration:.0f} s requested; exit code {run.returncode}"
        f"{' (HUNG)' if run.hung else ''}; client CPU"
        f" {fmt(run.samples[-1].cpu_s if run.samples else None)} s at the last sample",
        f"- client RSS MiB: peak {mem['peak_rss_mib']:.1f}; at 10% {fmt(r['10%'])},"
        f" 50% {fmt(r['50%'])}, 90% {fmt(r['90%'])}, 100% {fmt(r['100%'])}; growth 50%->100%"
        f" {growth_text(mem)}"
        f" (tolerance {100 * args.tolerance:.0f}%): {'bounded' if mem['bounded'] else 'NOT bounded'}",
        f"- server: {requests_seen} requests seen ({requests_seen / run.wall_s:.1f}/s),"
        f" at most {max_in_flight} streaming at once, CPU {server_cpu:.1f} s,"
        f" {in_flight_left} still open at the end; faults picked {picked}; server-side"
        f" errors logged {dict(server_errors.counts) or 'none'}",
        f"- injected vs recorded (server, client): {compare}; injected, not recorded"
        f" (request cancelled before its fault showed): {unrecorded or 'none'}",
        f"- session: {sess.get('size_bytes', 0) / 1e6:.1f} MB, {sess.get('events', 0):,} events,"
        f" end reason {sess.get('end_reason')!r}",
        f"- requests (events): {counts}",
        f"- requests (end record): {sess.get('end_summary')}",
        f"- failure reasons: {sess.get('failure_reasons')}",
        f"- cancelled before the deadline (\"run ended\" while the run went on):"
        f" {sess.get('cancelled_before_deadline')}"
        f" (first: {sess.get('first_cancelled_before_deadline')})",
        *verdict_lines(sess, err, problems, run, duration, "Client RSS over the run:"),
    ]
    if err["bytes"]:
        lines += ["stderr (start):", "", "```", err["head"], "```", ""]
    report = "\n".join(lines)
    print(report)
    out("md").write_text(report)
    out("json").write_text(json.dumps({
        "command": shown, "code": version, "duration_s": duration, "wall_s": run.wall_s,
        "returncode": run.returncode, "hung": run.hung, "memory": mem, "session": sess,
        "stderr": err, "server": {"requests": requests_seen, "cpu_s": server_cpu, "max_in_flight": max_in_flight,
                                  "in_flight_left": in_flight_left, "picked": picked,
                                  "errors_logged": dict(server_errors.counts)},
        "injected_vs_recorded": compare, "unrecorded": unrecorded, "problems": problems,
        "samples": samples_json(run.samples),
    }, indent=1, default=str))
    print(f"# written {base}.md / .json / .jsonl / .stdout / .stderr")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
