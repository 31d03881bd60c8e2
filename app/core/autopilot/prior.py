"""A warm start from a sweep: what each static setting did, at each offered load.

`wattflow sweep` records one session per knob setting. Read back, each session is one
point: the setting it held (power cap, batch limit), the offered load (the rate knob;
None for a closed loop), its J/token and whether it met the objective in at least
`met_share` of its `window_s` windows (the same test the benchmark applies). The
autopilot remembers the best point of each load (the least J/token among those that met
it; within 2% of it, the highest cap) as if it had met that load itself, and goes to it
as soon as the load is there (then measures it live, and searches on from it), instead of
walking down from the top of the grid. A sweep of another day, or of the twin, is a
starting point, not a verdict: every setting is still judged by what it does now.

Sessions whose knobs or rate changed mid-run (an `--at` schedule, a key, the autopilot)
are not static points and are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from app.core.autopilot.measure import quantile
from app.core.autopilot.objective import AutopilotError, Objective, Target
from app.core.autopilot.params import AutopilotParams
from app.core.events import KnobEvent, RequestEvent, Sample, WorkflowEvent
from app.core.session_reader import SessionError, SessionStream

PRIOR_KNOBS = ("power_cap", "batch_limit", "max_num_seqs")
# Knob changes that belong to setting a session up, not to changing it mid-run.
_SETUP_SOURCES = ("cli", "start", "sweep", "restore")


@dataclass(frozen=True, slots=True)
class PriorPoint:
    knobs: dict[str, float]  # the setting held (of PRIOR_KNOBS)
    load: float | None  # the rate knob, workflows/s (None: a closed loop)
    j_per_token: float
    tokens_per_s: float
    met: bool
    windows: int
    windows_met: int
    path: str = ""


@dataclass(slots=True)
class Prior:
    points: list[PriorPoint] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why a session was left out

    def loads(self, prefer: dict[str, float | None] | None = None, noise: float = 0.02
              ) -> dict[float | None, tuple[PriorPoint, list[PriorPoint]]]:
        """Per load: the point with the least J/token that met the objective, and the
        points that did not. Loads where none met it are left out. Within `noise` of the
        least J/token (params.min_gain): the highest power cap, then the batch limit nearest `prefer`'s
        (the one in force: a larger one is not safer, it trades time per token for
        throughput)."""
        by_load: dict[float | None, list[PriorPoint]] = {}
        for p in self.points:
            key = None if p.load is None else round(p.load, 6)
            by_load.setdefault(key, []).append(p)
        out: dict[float | None, tuple[PriorPoint, list[PriorPoint]]] = {}
        for load, pts in by_load.items():
            met = [p for p in pts if p.met]
            if met:
                least = min(p.j_per_token for p in met)
                near = [p for p in met if p.j_per_token <= least * (1.0 + noise)]
                want = (prefer or {}).get("batch_limit")
                best = max(near, key=lambda p: _rank(p, want))
                out[load] = (best, [p for p in pts if not p.met])
        return out


def _rank(p: PriorPoint, batch_in_force: float | None) -> tuple[float, float, float]:
    """Higher is preferred: the power cap, then the batch limit nearest the one in force
    (in powers of two), then less J/token."""
    b = p.knobs.get("batch_limit")
    off = abs(math.log2(b / batch_in_force)) if b and batch_in_force else 0.0
    return (p.knobs.get("power_cap", 0.0), -off, -p.j_per_token)


def _files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for text in paths:
        p = Path(text)
        if p.is_dir():
            found = sorted([*p.glob("*.jsonl"), *p.glob("*.jsonl.zst")])
            if not found:
                raise AutopilotError(f"autopilot prior {text}: no sessions (*.jsonl) in it")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise AutopilotError(f"autopilot prior {text}: no such file or directory")
    return out


def _value(t: Target, e: RequestEvent) -> float | None:
    if t.stage is not None and e.stage != t.stage:
        return None
    if t.metric == "ttft":
        return e.ttft_s
    if t.metric == "tpot":
        return e.tpot_s
    return e.latency_s


def read_point(path: Path, objective: Objective, skip_s: float = 60.0,
               window_s: float = 30.0, met_share: float = 0.95) -> PriorPoint | str:
    """One session as a point, or why it is not one (a string). Read as a stream: an
    hour-long sweep point is ~10 MB and only its finished requests are kept."""
    knobs: dict[str, float] = {}
    load: float | None = None
    # Per GPU: its energy counter's first and last reading after `skip_s`, J.
    first_j: dict[str, float] = {}
    last_j: dict[str, float] = {}
    done: list[RequestEvent] = []
    flows: list[tuple[float, float]] = []
    try:
        for e in SessionStream(path):
            if isinstance(e, KnobEvent):
                if e.knob not in PRIOR_KNOBS and e.knob != "rate":
                    continue
                if e.source not in _SETUP_SOURCES and e.is_change:
                    return f"{path.name}: {e.knob} changed mid-run (not a static setting)"
                if e.knob == "rate":
                    load = e.value
                elif e.value is not None:
                    knobs[e.knob] = float(e.value)
            elif isinstance(e, Sample):
                if e.component == "gpu" and e.energy_mj is not None and e.t_s >= skip_s:
                    first_j.setdefault(e.device, e.energy_mj / 1000.0)
                    last_j[e.device] = e.energy_mj / 1000.0
            elif isinstance(e, RequestEvent):
                if e.phase == "finished" and e.t_s >= skip_s:
                    done.append(e)
            elif (isinstance(e, WorkflowEvent) and e.phase == "finished"
                  and e.latency_s is not None and e.t_s >= skip_s):
                flows.append((e.t_s, e.latency_s))
    except SessionError as exc:
        raise AutopilotError(f"autopilot prior: {exc}") from None
    if not knobs:
        return f"{path.name}: no power cap or batch limit recorded"
    if not done:
        return f"{path.name}: no requests finished after the first {skip_s:g} s"
    tokens = sum(e.output_tokens for e in done)
    joules = sum(last_j[dev] - first_j[dev] for dev in first_j)
    if tokens <= 0 or joules <= 0:
        return f"{path.name}: no GPU energy or no output tokens to tell J/token"
    t0, t1 = skip_s, max(e.t_s for e in done)
    windows = met = 0
    t = t0
    while t + window_s <= t1 + 1e-9:
        ok: bool | None = None
        for target in objective.targets:
            if target.metric == "workflow":
                vals = [lat for when, lat in flows if t <= when < t + window_s]
            else:
                vals = [v for e in done if t <= e.t_s < t + window_s
                        for v in (_value(target, e),) if v is not None]
            if len(vals) < 5:
                continue
            good = quantile(sorted(vals), target.quantile) <= target.limit_s
            ok = good if ok is None else ok and good
        if ok is not None:
            windows += 1
            met += ok
        t += window_s
    if windows == 0:
        return f"{path.name}: too few requests to judge the objective in any {window_s:g} s window"
    return PriorPoint(knobs=knobs, load=load, j_per_token=joules / tokens,
                      tokens_per_s=tokens / max(t1 - t0, 1e-9),
                      met=met / windows >= met_share, windows=windows, windows_met=met,
                      path=str(path))


_read: dict[tuple[tuple[str, ...], str, tuple[float, ...], float, float], Prior] = {}


def read_prior(paths: list[str], objective: Objective,
               params: AutopilotParams | None = None) -> Prior:
    """Every session under `paths` (files, or folders of a sweep) as points. Read once
    per process (the command line checks it before the run starts, the run uses it)."""
    p = params or AutopilotParams()
    files = _files(paths)
    key = (tuple(str(f) for f in files), objective.text(),
           tuple(f.stat().st_mtime for f in files), p.window_s, p.prior_met_share)
    if key in _read:
        return _read[key]
    prior = _read_prior(paths, files, objective, p)
    _read.clear()
    _read[key] = prior
    return prior


def _read_prior(paths: list[str], files: list[Path], objective: Objective,
                p: AutopilotParams) -> Prior:
    prior = Prior()
    for f in files:
        got = read_point(f, objective, window_s=p.window_s, met_share=p.prior_met_share)
        if isinstance(got, str):
            prior.skipped.append(got)
        elif math.isfinite(got.j_per_token):
            prior.points.append(got)
    if not prior.points:
        why = f" ({prior.skipped[0]})" if prior.skipped else ""
        raise AutopilotError(f"autopilot prior: no static setting to start from in "
                             f"{', '.join(paths)}{why}")
    return prior
