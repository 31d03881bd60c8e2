"""The autopilot against the oracle, on the twin, through the CLI (issue 13).

    python bench/autopilot_oracle.py                  # all four workloads + rate changes
    python bench/autopilot_oracle.py --only interactive --quick

For each workload at a steady rate:
1. `wattflow sweep --fast` over the static grid (power cap 250-700 W by 50 W x batch
   limit 16, 64, 256), one session per point;
2. the objective: p90 TTFT and p90 TPOT each 5% above the worst 30 s window of the
   600 W / batch 64 point over the hour (a setting that keeps up with the load and meets
   it in every window, so that the objective binds below it; stated, not tuned to the
   autopilot);
3. the oracle: the static point with the least J/token that meets the objective in at
   least 95% of the 30 s windows after the first minute;
4. `wattflow run --fast --autopilot OBJECTIVE` for an hour from the defaults (700 W,
   batch 64): its J/token after its first 5 minutes against the oracle's over the same
   span (goal: within 5%), and the share of 30 s windows after the first 5 minutes that
   meet the objective (goal: at least 95%). With `--seeds N` the autopilot also runs at
   seeds 1..N-1, and with `--own-oracle` each of those is set against the oracle of a
   sweep at its own seed (the same objective): another seed is another mix of requests,
   whose J/token at one setting differs from seed 0's.
Then rate changes (interactive from 0.35 conversations/s: a step up 4x and back; a slow
ramp to 3x and back): the same sweep with the same `--at` schedule, the objective from
its 600 W / batch 64 point as above, and the autopilot's energy against every static
point that meets the objective throughout: in >= 95% of the windows of every quarter hour
(the weaker reading, >= 95% of the whole run's windows, is reported beside it: it lets a
setting too slow for the peak pass on the easy hours around it).

A window meets the objective when the p90 TTFT and p90 TPOT of the requests that
finished in it are within the limits (windows with fewer than 5 requests are skipped).
Writes bench/out/autopilot/*.jsonl and prints a markdown report (for bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.events import AutopilotEvent, KnobEvent, RequestEvent, Sample  # noqa: E402
from app.core.session_reader import read_session  # noqa: E402

OUT = ROOT / "bench" / "out" / "autopilot"
CAPS = [250, 300, 350, 400, 450, 500, 550, 600, 650, 700]
BATCHES = [16, 64, 256]
WINDOW_S = 30.0
CHANGE_BASE = 0.35  # interactive conversations/s before the steps and ramps
# A static setting meets the objective "throughout" a changing load when it meets it in
# at least 95% of the windows of every quarter hour, not only of the whole run: over the
# whole run a setting too slow for a short peak passes on the easy hours around it.
STRETCH_S = 900.0

# Steady rates that keep the twin busy without a queue growing (workflows/s).
STEADY: dict[str, float] = {"sequential": 0.5, "interactive": 1.0, "agentic": 0.015,
                            "composite": 1.2}


@dataclass
class Measured:
    path: Path
    j_per_token: float  # GPU energy / output tokens, after `since_s`
    energy_j: float
    windows: int
    windows_met: int
    knobs: str = ""
    # (windows, met) in each STRETCH_S stretch of the run: "throughout" a changing load
    stretches: list[tuple[int, int]] = field(default_factory=list)

    @property
    def met_share(self) -> float:
        return self.windows_met / self.windows if self.windows else 0.0

    @property
    def worst_stretch(self) -> float:
        return min((m / n for n, m in self.stretches if n), default=0.0)


def wattflow(*args: str) -> None:
    cmd = [sys.executable, "-m", "app", *args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")


def _p90(v: list[float]) -> float:
    v = sorted(v)
    pos = 0.9 * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


# A session as the bench judges it: GPU energy series per device, (time, output tokens) of
# every finished request, (time, TTFT, TPOT) of those with both, and the window's end.
Loaded = tuple[dict[str, list[tuple[float, float]]], list[tuple[float, int]],
               list[tuple[float, float, float]], float | None]


def _load(path: Path) -> Loaded:
    # Keyed by the file's mtime too: the autopilot's session is rewritten at one path.
    return _read(path, path.stat().st_mtime_ns)


@functools.cache
def _read(path: Path, mtime_ns: int) -> Loaded:
    """A session read once, to be judged against as many objectives as asked."""
    s = read_session(path)
    energy: dict[str, list[tuple[float, float]]] = {}
    tokens: list[tuple[float, int]] = []
    done: list[tuple[float, float, float]] = []
    for e in s.events:
        if isinstance(e, Sample) and e.component == "gpu" and e.energy_mj is not None:
            energy.setdefault(e.device, []).append((e.t_s, e.energy_mj / 1000.0))
        elif isinstance(e, RequestEvent) and e.phase == "finished":
            tokens.append((e.t_s, e.output_tokens))
            if e.ttft_s is not None and e.tpot_s is not None:
                done.append((e.t_s, e.ttft_s, e.tpot_s))
    end = s.end.summary.get("window_end_s") if s.end is not None else None
    return energy, tokens, done, float(end) if end else None


def measure(path: Path, limits: tuple[float, float] | None, since_s: float) -> Measured:
    energy, finished, done, end = _load(path)
    tokens = sum(n for t, n in finished if t >= since_s)
    t_end = end if end is not None else max(t for t, _, _ in done)
    joules = 0.0
    for series in energy.values():
        after = [(t, j) for t, j in series if since_s <= t <= t_end]
        if len(after) >= 2:
            joules += after[-1][1] - after[0][1]
    windows = met = 0
    stretches: dict[int, list[int]] = {}
    if limits is not None:
        t = since_s
        while t + WINDOW_S <= t_end:
            w = [(a, b) for when, a, b in done if t <= when < t + WINDOW_S]
            if len(w) >= 5:
                windows += 1
                ok = _p90([a for a, _ in w]) <= limits[0] and _p90([b for _, b in w]) <= limits[1]
                met += ok
                st = stretches.setdefault(int(t // STRETCH_S), [0, 0])
                st[0] += 1
                st[1] += ok
            t += WINDOW_S
    return Measured(path, joules / tokens if tokens else float("inf"), joules, windows, met,
                    stretches=[(n, m) for _, (n, m) in sorted(stretches.items())])


Key = tuple[int, int]  # (power cap W, batch limit)


def limits_of(ref: tuple[float, float], scale: float = 1.0) -> tuple[float, float]:
    """The objective: p90 TTFT and p90 TPOT 5% above `ref` (the worst window of the 600 W
    / batch 64 point), times `scale`."""
    return ref[0] * 1.05 * scale, ref[1] * 1.05 * scale


def oracle_of(statics: dict[Key, Measured]) -> tuple[Key, Measured] | None:
    """The static point with the least J/token that meets the objective in >= 95% of its
    windows (None where none does)."""
    ok = [kv for kv in statics.items() if kv[1].met_share >= 0.95]
    return min(ok, key=lambda kv: kv[1].j_per_token) if ok else None


def p90s(path: Path) -> tuple[float, float]:
    """The largest p90 TTFT and p90 TPOT of any 30 s window after the first minute."""
    s = read_session(path)
    done = [(e.t_s, e.ttft_s, e.tpot_s) for e in s.events if isinstance(e, RequestEvent)
            and e.phase == "finished" and e.ttft_s is not None and e.tpot_s is not None]
    t_end = max(t for t, _, _ in done)
    worst = (0.0, 0.0)
    t = 60.0
    while t + WINDOW_S <= t_end:
        w = [(a, b) for when, a, b in done if t <= when < t + WINDOW_S]
        if len(w) >= 5:
            worst = (max(worst[0], _p90([a for a, _ in w])), max(worst[1], _p90([b for _, b in w])))
        t += WINDOW_S
    return worst


WARM = False  # --warm: also the autopilot warm-started from short steady sweeps
REUSE = False  # --reuse: keep sweeps already in bench/out/autopilot (the twin unchanged)
SEEDS = 1  # --seeds N: the autopilot's steady runs at seeds 0..N-1 (the sweep at seed 0)
OWN_ORACLE = False  # --own-oracle: also sweep seeds 1..N-1, each seed against its own oracle


def sweep(tag: str, workload: str, rate: float, duration: int, at: list[str],
          seed: int = 0, reuse: bool = False) -> dict[tuple[int, int], Path]:
    folder = OUT / tag
    points = {(c, b): folder / f"power_cap={c}-batch_limit={b}.jsonl"
              for c in CAPS for b in BATCHES}
    if (REUSE or reuse) and all(p.exists() for p in points.values()):
        return points
    if folder.exists():
        for f in folder.glob("*.jsonl"):
            f.unlink()
    at_args = [x for a in at for x in ("--at", a)]
    wattflow("sweep", "--fast", "--workload", workload, "--rate", str(rate), "--duration",
             str(duration), "--grid", "power_cap=" + ",".join(map(str, CAPS)), "--grid",
             "batch_limit=" + ",".join(map(str, BATCHES)), "--dir", str(folder),
             "--seed", str(seed), *at_args)
    return points


def autopilot(tag: str, workload: str, rate: float, duration: int, objective: str,
              at: list[str], seed: int = 0, prior: list[Path] | None = None) -> Path:
    name = f"{tag}-autopilot" + ("-warm" if prior else "") + (f"-seed{seed}" if seed else "")
    path = OUT / f"{name}.jsonl"
    path.unlink(missing_ok=True)
    at_args = [x for a in at for x in ("--at", a)]
    prior_args = [x for d in prior or [] for x in ("--autopilot-prior", str(d))]
    wattflow("run", "--headless", "--fast", "--workload", workload, "--rate", str(rate),
             "--duration", str(duration), "--autopilot", objective, "--session", str(path),
             "--seed", str(seed), *at_args, *prior_args)
    return path


PRIOR_SEED = 100  # the warm start's sweeps: other arrivals than the runs they start
PRIOR_S = 600  # ten minutes per setting


def prior_sweeps(workload: str, rates: list[float]) -> list[Path]:
    """Short steady sweeps (PRIOR_S per setting, seed PRIOR_SEED) at `rates`: what a
    user would run once to warm-start the autopilot (`--autopilot-prior`)."""
    out = []
    for r in rates:
        tag = f"prior-{workload}-{r:g}"
        sweep(tag, workload, r, PRIOR_S, [], PRIOR_SEED)
        out.append(OUT / tag)
    return out


def pilot_summary(path: Path) -> str:
    s = read_session(path)
    changes = [e for e in s.events if isinstance(e, KnobEvent) and e.source == "autopilot"]
    states = [e for e in s.events if isinstance(e, AutopilotEvent)]
    last = {e.knob: e.value for e in changes}
    final = ", ".join(f"{k}={v:g}" for k, v in last.items() if v is not None)
    return f"{len(changes)} knob changes, {len(states)} decisions, ends at {final or 'the start'}"


def own_row(seed: int, ap: Measured, own: tuple[tuple[int, int], Measured] | None,
            limits: tuple[float, float]) -> str:
    """A table row: seed `seed`'s own oracle and the autopilot's J/token against it."""
    if own is None:
        return f"| oracle of seed {seed}'s own sweep: none meets the objective | | |"
    (cap, batch), m = own
    late = measure(m.path, limits, 300.0)
    return (f"| oracle of seed {seed}'s own sweep (power_cap={cap}, batch_limit={batch}); "
            f"autopilot against it | {late.j_per_token:.4f}; autopilot "
            f"{ap.j_per_token / late.j_per_token - 1.0:+.1%} | {m.met_share:.0%} of {m.windows}; "
            f"after 5 min {late.windows_met} of {late.windows} |")


def fmt_limits(limits: tuple[float, float]) -> str:
    return f"ttft_p90={limits[0] * 1000:.0f}ms,tpot_p90={limits[1] * 1000:.1f}ms"


def steady(workload: str, rate: float, duration: int, hour: int) -> list[str]:
    points = sweep(workload, workload, rate, hour, [])
    ref = p90s(points[(600, 64)])
    limits = limits_of(ref)
    objective = fmt_limits(limits)
    statics = {k: measure(p, limits, 60.0) for k, p in points.items()}
    best = oracle_of(statics)
    path = autopilot(workload, workload, rate, hour, objective, [])
    ap = measure(path, limits, 300.0)
    # Other seeds (other arrivals and lengths): one hour is one draw of a process whose
    # decisions branch, so a change to the method is judged on several.
    more = [measure(autopilot(workload, workload, rate, hour, objective, [], seed), limits,
                    300.0) for seed in range(1, SEEDS)]
    # Each seed's own oracle (--own-oracle): the same objective, the static sweep run on
    # that seed's arrivals and lengths. An agentic hour at another seed is another mix of
    # projects, whose J/token differs by more than 5% at one setting: the seed-0 oracle
    # is no yardstick for it.
    own: dict[int, tuple[tuple[int, int], Measured] | None] = {}
    if OWN_ORACLE:
        for seed in range(1, SEEDS):
            pts = sweep(f"{workload}-seed{seed}", workload, rate, hour, [], seed)
            own[seed] = oracle_of({k: measure(p, limits, 60.0) for k, p in pts.items()})
    warm = measure(autopilot(workload, workload, rate, hour, objective, [],
                             prior=prior_sweeps(workload, [rate])), limits, 300.0) \
        if WARM else None
    lines = [f"### {workload} at {rate:g} workflows/s, objective `{objective}`", ""]
    if best is None:
        lines.append("no static point meets the objective: no oracle")
        return lines
    okey, oracle = best
    # The oracle is chosen on its hour after the first minute; the autopilot is judged
    # after its first 5 minutes, so its J/token is set against the oracle's over the same
    # span (J/token over the first minutes differs by up to 2%, either way).
    late = measure(points[okey], limits, 300.0)
    gap = ap.j_per_token / late.j_per_token - 1.0
    lines += [
        "| | J/token | windows met |",
        "|---|---|---|",
        f"| oracle (power_cap={okey[0]}, batch_limit={okey[1]}, {hour} s) | "
        f"{oracle.j_per_token:.4f} | {oracle.met_share:.0%} of {oracle.windows} |",
        # The yardstick: the oracle on the span and the windows the autopilot is judged on.
        f"| the oracle after 5 min, the span the autopilot is judged on | "
        f"{late.j_per_token:.4f} | {late.met_share:.1%} ({late.windows_met} of "
        f"{late.windows}) |",
        f"| autopilot (after 5 min of {hour} s) | {ap.j_per_token:.4f} ({gap:+.1%}) | "
        f"{ap.met_share:.1%} ({ap.windows_met} of {ap.windows}) |",
        *(f"| autopilot, seed {i} | {m.j_per_token:.4f} "
          f"({m.j_per_token / late.j_per_token - 1.0:+.1%}) | {m.met_share:.1%} "
          f"({m.windows_met} of {m.windows}) |" for i, m in enumerate(more, start=1)),
        *(own_row(i, m, own[i], limits) for i, m in enumerate(more, start=1) if i in own),
        *([f"| autopilot warm-started from a {PRIOR_S // 60} min sweep (seed {PRIOR_SEED}) | "
           f"{warm.j_per_token:.4f} ({warm.j_per_token / late.j_per_token - 1.0:+.1%}) | "
           f"{warm.met_share:.1%} ({warm.windows_met} of {warm.windows}) |"] if warm else []),
        f"| default (700 W, batch 64) | {statics[(700, 64)].j_per_token:.4f} | "
        f"{statics[(700, 64)].met_share:.0%} |",
        "",
        f"autopilot: {pilot_summary(path)}; within 5%: {'yes' if gap <= 0.05 else 'NO'}; "
        f"objective in >= 95% of windows: {'yes' if ap.met_share >= 0.95 else 'NO'}",
        "",
    ]
    return lines


def objectives(workload: str, rate: float, hour: int, scales: list[float]) -> list[str]:
    """The autopilot at objectives tighter and looser than the benchmark's (its limits
    times each scale), each seed against the oracle of its own sweep at that objective.

    The benchmark's objective is one draw of where the knee falls against the grid: its
    oracle may meet the objective in 99% of windows or in 95.0%, and at 95.0% an
    autopilot that has to find it cannot spend a single window below it. Scaling the
    limits moves the knee across the grid, so the table shows how often both goals hold
    and how the outcome follows the oracle's own slack (its windows met beyond 95%)."""
    base = sweep(workload, workload, rate, hour, [], reuse=True)
    ref = p90s(base[(600, 64)])
    seeds = list(range(SEEDS))
    lines = [f"### {workload} at {rate:g} workflows/s: the benchmark's objective scaled", "",
             "Each cell: the seed's own oracle (windows it meets after the first 5 minutes); "
             "the autopilot's J/token against it and its windows met; **both** where both "
             "goals hold.", "",
             "| scale | objective | " + " | ".join(f"seed {i}" for i in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    passed = total = 0
    for scale in scales:
        limits = limits_of(ref, scale)
        objective = fmt_limits(limits)
        cells = []
        for seed in seeds:
            pts = base if seed == 0 else sweep(f"{workload}-seed{seed}", workload, rate, hour,
                                               [], seed, reuse=True)
            best = oracle_of({k: measure(p, limits, 60.0) for k, p in pts.items()})
            if best is None:
                cells.append("no static setting meets it")
                continue
            okey, _ = best
            late = measure(pts[okey], limits, 300.0)
            ap = measure(autopilot(f"{workload}-x{scale:g}", workload, rate, hour, objective,
                                   [], seed), limits, 300.0)
            gap = ap.j_per_token / late.j_per_token - 1.0
            both = gap <= 0.05 and ap.met_share >= 0.95
            passed += both
            total += 1
            cells.append(f"{okey[0]} W/{okey[1]} ({late.windows_met}/{late.windows}); "
                         f"{gap:+.1%}, {ap.windows_met}/{ap.windows}"
                         + (" **both**" if both else ""))
        lines.append(f"| {scale:g} | `{objective}` | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    lines += ["", f"both goals on {passed} of {total} runs", ""]
    return lines


def changing(name: str, rate: float, at: list[str], duration: int) -> list[str]:
    points = sweep(f"change-{name}", "interactive", rate, duration, at)
    # The objective as for a steady rate: 5% above the worst 30 s window of the 600 W /
    # batch 64 point of the same changing run (a static setting that meets it throughout,
    # so that it binds below it).
    ref = p90s(points[(600, 64)])
    limits = limits_of(ref)
    objective = fmt_limits(limits)
    statics = {k: measure(p, limits, 60.0) for k, p in points.items()}
    # Throughout: >= 95% of the windows of every quarter hour; for comparison, the weaker
    # reading of >= 95% of the windows of the whole run.
    ok = {k: m for k, m in statics.items() if m.worst_stretch >= 0.95}
    overall = {k: m for k, m in statics.items() if m.met_share >= 0.95}
    path = autopilot(f"change-{name}", "interactive", rate, duration, objective, at)
    ap = measure(path, limits, 60.0)
    # Other seeds (other arrivals and lengths): each against the statics of its own seed
    # (the same objective), as (saving against the best meeting it throughout, against
    # the best over the whole run).
    warm = None
    if WARM:
        # Steady sweeps at the base rate and each whole multiple of it up to the peak.
        top = max(float(a.rpartition("=")[2]) for a in at)
        rates = sorted({round(r, 6) for r in (rate, top, *(rate * k for k in range(
            2, int(top / rate + 1e-9) + 1)))})
        warm = measure(autopilot(f"change-{name}", "interactive", rate, duration, objective, at,
                                 prior=prior_sweeps("interactive", rates)), limits, 60.0)
        warm_rates = ", ".join(f"{r:g}" for r in rates)
    more: list[tuple[Measured, float, float]] = []
    for seed in range(1, SEEDS):
        st = {k: measure(p, limits, 60.0) for k, p in sweep(
            f"change-{name}-seed{seed}", "interactive", rate, duration, at, seed).items()}
        m = measure(autopilot(f"change-{name}", "interactive", rate, duration, objective, at,
                              seed), limits, 60.0)
        thr = min((x.energy_j for x in st.values() if x.worst_stretch >= 0.95), default=0.0)
        ovr = min((x.energy_j for x in st.values() if x.met_share >= 0.95), default=0.0)
        more.append((m, 1.0 - m.energy_j / thr if thr else float("nan"),
                     1.0 - m.energy_j / ovr if ovr else float("nan")))
    lines = [f"### interactive, rate {name}: `{' '.join(at)}`, objective `{objective}`", ""]
    if not ok:
        lines.append(f"no static point meets the objective throughout; autopilot "
                     f"{ap.energy_j:.0f} J, {ap.met_share:.0%} of windows")
        return lines

    def row(label: str, m: Measured) -> str:
        per = " / ".join(f"{met}/{n}" for n, met in m.stretches)
        return (f"| {label} | {m.energy_j:.0f} | {m.j_per_token:.4f} | {m.met_share:.0%} | "
                f"{per} |")

    best_key, best = min(ok.items(), key=lambda kv: kv[1].energy_j)
    weak_key, weak = min(overall.items(), key=lambda kv: kv[1].energy_j)
    saving = 1.0 - ap.energy_j / best.energy_j
    weak_saving = 1.0 - ap.energy_j / weak.energy_j
    lines += [
        f"| | GPU energy J | J/token | windows met | per {STRETCH_S / 60:.0f} min |",
        "|---|---|---|---|---|",
        row(f"best static that meets it throughout (power_cap={best_key[0]}, "
            f"batch_limit={best_key[1]})", best),
        row(f"best static that meets it in 95% of the whole run's windows (power_cap="
            f"{weak_key[0]}, batch_limit={weak_key[1]})", weak),
        row("autopilot", ap),
        *(row(f"autopilot, seed {i}", m) for i, (m, _, _) in enumerate(more, start=1)),
        *([row(f"autopilot warm-started from {PRIOR_S // 60} min sweeps at {warm_rates}/s "
               f"(seed {PRIOR_SEED})", warm)] if warm else []),
        "",
        f"autopilot uses {saving:.1%} {'less' if saving >= 0 else 'MORE'} energy than the best "
        f"of {len(ok)} static settings that meet the objective throughout (every "
        f"{STRETCH_S / 60:.0f} min), {weak_saving:.1%} "
        f"{'less' if weak_saving >= 0 else 'MORE'} than the best of {len(overall)} that meet "
        f"it over the whole run; {pilot_summary(path)}",
        *([f"warm-started: {1.0 - warm.energy_j / best.energy_j:+.1%} / "
           f"{1.0 - warm.energy_j / weak.energy_j:+.1%} energy saved (throughout / whole run)"]
          if warm else []),
        *(["energy saved at other seeds, each against its own seed's statics (throughout / "
           "whole run): " + ", ".join(f"seed {i}: {a:+.1%} / {b:+.1%}" for i, (_, a, b)
                                      in enumerate(more, start=1))] if more else []),
        "",
    ]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=None, help="one workload, or 'change'")
    ap.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    ap.add_argument("--reuse", action="store_true", help="reuse the sweeps already run")
    ap.add_argument("--seeds", type=int, default=1,
                    help="autopilot runs per steady workload, at seeds 0..N-1")
    ap.add_argument("--own-oracle", action="store_true",
                    help="also sweep each seed: each autopilot run against its own seed's oracle")
    ap.add_argument("--warm", action="store_true",
                    help="also the autopilot warm-started from short steady sweeps")
    ap.add_argument("--scales", default=None,
                    help="instead: the objective scaled by each of these (e.g. 0.8,0.9,1.1,"
                         "1.25) for the steady workloads, each seed against its own oracle "
                         "(sweeps made as needed, kept ones reused)")
    args = ap.parse_args()
    global REUSE, SEEDS, WARM, OWN_ORACLE
    REUSE, SEEDS, WARM = args.reuse, max(1, args.seeds), args.warm
    OWN_ORACLE = args.own_oracle
    OUT.mkdir(parents=True, exist_ok=True)
    duration, hour = (300, 1200) if args.quick else (600, 3600)
    t0 = time.perf_counter()
    lines = ["## Autopilot against the oracle (bench/autopilot_oracle.py)", ""]
    if args.scales:
        scales = [float(x) for x in args.scales.split(",")]
        for w, rate in STEADY.items():
            if args.only in (None, w):
                lines += objectives(w, rate, hour, scales)
        lines.append(f"wall time {time.perf_counter() - t0:.0f} s")
        print("\n".join(lines))
        (OUT / f"report-scales-{args.only or 'all'}.md").write_text("\n".join(lines) + "\n")
        return 0
    for w, rate in STEADY.items():
        if args.only in (None, w):
            lines += steady(w, rate, duration, hour)
            print("\n".join(lines[-12:]), flush=True)
    if args.only in (None, "change"):
        # A base rate whose 4x peak the twin still serves at 600 W / batch 64 (interactive
        # saturates it near 2 conversations/s).
        base = CHANGE_BASE
        step = [f"900:rate={4 * base:g}", f"1800:rate={base:g}"]
        ramp = [f"{600 + 150 * i}:rate={base * (1 + 0.2 * (i + 1)):g}" for i in range(10)] + \
               [f"{2100 + 150 * i}:rate={base * (3 - 0.2 * (i + 1)):g}" for i in range(10)]
        lines += changing("step", base, step, 2700)
        lines += changing("ramp", base, ramp, 3600)
    lines.append(f"wall time {time.perf_counter() - t0:.0f} s")
    print("\n".join(lines))
    (OUT / "report.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
