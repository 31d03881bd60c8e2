"""Soak on virtual time (issue 8): many simulated hours of a workload on the twin through
the CLI, `wattflow run --headless --fast --duration SECONDS --session PATH`, watched as a
subprocess. Reports wall time, resident memory over the run (peak, at 10/50/90/100% of
the simulated time, whether it stays bounded), the session's size, and checks the
session's bookkeeping (see soak_common: every submitted request ends exactly once, the
end record's counts match the events, every workflow ends once).

    python bench/soak_virtual.py                 # 24 simulated hours, composite
    python bench/soak_virtual.py --hours 1       # a quick one

Writes bench/out/soak_virtual-<tag>.{md,json,jsonl,stdout,stderr}; exit 1 if a check
failed (an invariant, the exit code, stderr, unbounded memory or a hang).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak_common import (
    OUT_DIR,
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    ap.add_argument("--workload", default="composite")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--interval", type=float, default=5.0,
                    help="wall seconds between memory samples (default 5)")
    ap.add_argument("--tolerance", type=float, default=0.10,
                    help="RSS growth allowed from 50%% to 100%% of the run, beyond what"
                         " the exact quantiles keep (default 0.10)")
    ap.add_argument("--max-wall", type=float, default=3 * 3600,
                    help="wall seconds before the run is declared hung (default 3 h)")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--tag", default=None, help="file name tag (default WORKLOAD-HOURSh)")
    ap.add_argument("--delete-session", action="store_true",
                    help="delete the session file after the check (kept by default)")
    args = ap.parse_args()

    duration = args.hours * 3600
    tag = args.tag or f"{Path(args.workload).stem}-{args.hours:g}h"
    base = args.out / f"soak_virtual-{tag}"

    def out(ext: str) -> Path:  # not with_suffix: the tag may hold a dot ("0.5h")
        return base.parent / f"{base.name}.{ext}"

    session = out("jsonl")
    session.unlink(missing_ok=True)
    cmd = [*wattflow_command(), "run", "--headless", "--fast", "--duration", f"{duration:g}",
           "--workload", args.workload, "--seed", str(args.seed), "--session", str(session)]
    shown = " ".join(["wattflow", *cmd[cmd.index("run"):]])
    print(f"# soak_virtual: {shown}\n# {host_line()}", flush=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    version = code_version()
    run = watch(cmd, stdout_path=out("stdout"),
                stderr_path=out("stderr"), interval_s=args.interval,
                deadline_s=args.max_wall, target_t_s=duration)
    host_after = host_line()
    mem = memory_report(run.samples, duration, args.tolerance)
    print("# checking the session ...", flush=True)
    t0 = time.monotonic()
    sess = check_session(session, at_t_s=tuple(
        t for t in (mem["at_t_s"]["50%"], mem["at_t_s"]["100%"]) if t is not None))
    explain_growth(mem, sess)
    residual = mem["residual_growth_50_100"]
    mem["bounded"] = residual is not None and residual <= args.tolerance
    check_s = time.monotonic() - t0
    err = check_stderr(run.stderr_path)

    problems: list[str] = []
    if run.hung:
        problems.append(f"HANG: still running after {args.max_wall:.0f} s wall")
    if run.returncode != 0:
        problems.append(f"exit code {run.returncode}")
    if err["fatal"]:
        problems.append(f"stderr: {err['fatal']}")
    if not mem["bounded"]:
        problems.append(f"RSS not bounded: growth 50%->100% beyond exact-quantile storage"
                        f" {residual} > {args.tolerance}")
    if sess.get("end_reason") not in (None, "completed"):
        problems.append(f"run ended {sess['end_reason']!r}")
    problems += sess["violations"]

    r = mem["rss_mib"]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    lines = [
        f"# soak_virtual {tag} ({started})",
        "",
        f"command: `{shown}`",
        f"machine: {host_line()} at the start; {host_after} at the end",
        f"code: {version}",
        "",
        f"- simulated: {duration:.0f} s requested, {fmt(sess.get('last_t_s'))} s reached"
        f" (last progress line t={fmt(run.last_t_s)} s); wall {run.wall_s:.1f} s"
        f" ({duration / run.wall_s:.0f}x); exit code {run.returncode}"
        f"{' (HUNG)' if run.hung else ''}; CPU"
        f" {fmt(run.samples[-1].cpu_s if run.samples else None)} s at the last sample",
        f"- RSS MiB: peak {mem['peak_rss_mib']:.1f}; at 10% {fmt(r['10%'])}, 50% {fmt(r['50%'])},"
        f" 90% {fmt(r['90%'])}, 100% {fmt(r['100%'])}; growth 50%->100%"
        f" {growth_text(mem)}"
        f" (tolerance {100 * args.tolerance:.0f}%): {'bounded' if mem['bounded'] else 'NOT bounded'};"
        f" slope over the second half {fmt(mem['slope_mib_per_run_hour_second_half'])}"
        f" MiB per simulated hour",
        f"- session: {sess.get('size_bytes', 0) / 1e6:.1f} MB, {sess.get('events', 0):,} events,"
        f" end reason {sess.get('end_reason')!r}; checked in {check_s:.1f} s",
        f"- requests (events): {sess.get('events_count')}",
        f"- requests (end record): {sess.get('end_summary')}",
        f"- failure reasons: {sess.get('failure_reasons')}; cancelled before the deadline:"
        f" {sess.get('cancelled_before_deadline')}",
        *verdict_lines(sess, err, problems, run, duration, "RSS over the run:"),
    ]
    report = "\n".join(lines)
    print(report)
    out("md").write_text(report)
    out("json").write_text(json.dumps({
        "command": shown, "code": version, "duration_s": duration, "wall_s": run.wall_s,
        "returncode": run.returncode, "hung": run.hung, "memory": mem, "session": sess,
        "stderr": err, "problems": problems, "samples": samples_json(run.samples),
    }, indent=1, default=str))
    if args.delete_session:
        session.unlink(missing_ok=True)
    print(f"# written {base}.md / .json / .stdout / .stderr"
          f"{'' if args.delete_session else ' / .jsonl'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
