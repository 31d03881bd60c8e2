"""`wattflow calibrate SESSION...`: fit the simulated twin to sessions recorded on a real
engine and GPU, and write a profile that `--engine sim -E profile=FILE` uses.

Each session becomes a trace (engines/sim/trace_fit.py): its requests with their
submission times, prompt and output lengths, first-token and end times, the batch limit,
and the GPU energy the meter measured. The twin replays the same requests at the same
times and the fit moves its coefficients until output tokens/s, GPU power, median time
per output token and median time to first token match. Prints the error per session and
metric before (the default twin) and after the fit; `--check SESSION` predicts sessions
that were not fitted to. Bad or unsuitable input is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from bisect import bisect_left
from pathlib import Path
from typing import Any

from app.core.events import KnobEvent, RequestEvent, Sample
from app.core.session_reader import SessionError, read_session
from engines.sim.power import PowerCoefficients
from engines.sim.profile import TwinProfile, save_profile
from engines.sim.roofline import Calibration
from engines.sim.specs import GPUS, MODELS, GpuSpec, ModelSpec, resolve_gpu, resolve_model
from engines.sim.trace_fit import (
    METRICS,
    Trace,
    TraceError,
    TraceRequest,
    errors,
    fit,
    replay,
)

_LABELS = {"tokens_per_s": "output tok/s", "power_w": "GPU power W",
           "j_per_token": "J/token", "tpot_p50_s": "TPOT p50 s", "ttft_p50_s": "TTFT p50 s"}
_MIN_REQUESTS = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sessions", nargs="+", metavar="SESSION",
                   help="sessions recorded on a real engine and GPU (JSONL)")
    p.add_argument("--out", default="twin-profile.json", metavar="PROFILE",
                   help="where to write the profile (JSON; default twin-profile.json)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--check", action="append", default=[], metavar="SESSION",
                   help="also predict this session with the fitted twin (not fitted to);"
                        " repeatable")
    p.add_argument("--model", default=None,
                   help=f"the model the sessions ran, if their header's is not in the table"
                        f" ({', '.join(MODELS)})")
    p.add_argument("--gpu", default=None, help="the GPU they ran on, if not named by the"
                                               " meter (h100, a100)")
    p.add_argument("--max-evals", type=int, default=300, metavar="N",
                   help="replays the fit may try (default 300; each replays every session)")


# ---- a session as a trace -------------------------------------------------------------

def _gpu_of(header_meters: list[dict[str, Any]], override: str | None, name: str) -> GpuSpec:
    if override:
        return resolve_gpu(override)
    names = [str(d.get("name", "")) for m in header_meters for d in m.get("devices", [])
             if d.get("component") == "gpu"]
    if not names:
        raise TraceError(f"{name} has no GPU meter: it was recorded without GPU energy"
                         " readings (--meter none or rapl only)")
    for spec in GPUS.values():
        if spec.key.upper() in names[0].upper():
            return spec
    raise TraceError(f"{name}: the twin has no spec for GPU {names[0]!r} (give --gpu "
                     f"{'|'.join(GPUS)} for the nearest)")


def _model_of(header: Any, override: str | None, name: str) -> ModelSpec:
    if override:
        return resolve_model(override)
    model = header.engine.get("model") or header.config.get("engine_options", {}).get("model")
    if not model:
        raise TraceError(f"{name} does not say which model ran (give --model)")
    try:
        return resolve_model(str(model))
    except ValueError:
        raise TraceError(f"{name}: model {model!r} is not in the twin's table (give --model "
                         f"with the nearest shape: {', '.join(MODELS)})") from None


def _interp(ts: list[float], vs: list[float], t: float) -> float:
    i = bisect_left(ts, t)
    if i <= 0:
        return vs[0]
    if i >= len(ts):
        return vs[-1]
    t0, t1 = ts[i - 1], ts[i]
    return vs[i - 1] + (vs[i] - vs[i - 1]) * (t - t0) / (t1 - t0) if t1 > t0 else vs[i]


def session_trace(path: str, *, model: str | None = None, gpu: str | None = None) -> Trace:
    """A recorded session as a trace; TraceError (one line) if the twin cannot be fitted
    to it, SessionError if it cannot be read."""
    data = read_session(path)
    h = data.header
    name = Path(path).name
    if h.clock == "virtual" or h.engine.get("name") == "sim":
        raise TraceError(f"{name} was recorded on the simulated twin, not a real GPU: "
                         "nothing to fit")
    gpu_spec = _gpu_of(h.meters, gpu, name)
    model_spec = _model_of(h, model, name)
    reqs: dict[str, dict[str, Any]] = {}
    energy: dict[str, tuple[list[float], list[float]]] = {}
    last_t = 0.0
    for ev in data.events:
        last_t = max(last_t, ev.t_s)
        if isinstance(ev, RequestEvent):
            r = reqs.setdefault(ev.request_id, {})
            if ev.phase == "submitted":
                r.update(submit=ev.t_s, prompt=ev.prompt_tokens, max_tokens=ev.max_tokens)
            elif ev.phase == "first_token":
                r["first"] = ev.t_s
            elif ev.phase in ("finished", "failed"):
                r.update(end=ev.t_s, out=ev.output_tokens, cut=ev.phase == "failed")
        elif isinstance(ev, Sample) and ev.component == "gpu" and ev.energy_mj is not None:
            ts, vs = energy.setdefault(ev.device, ([], []))
            if not ts or ev.t_s > ts[-1]:
                ts.append(ev.t_s)
                vs.append(ev.energy_mj / 1000.0)
        elif isinstance(ev, KnobEvent) and ev.is_change and ev.source != "cli":
            raise TraceError(f"{name} changes {ev.knob} mid-run (at {ev.t_s:.0f} s): "
                             "calibrate on runs whose knobs stay fixed")
    end_s = data.end.t_s if data.end is not None else last_t
    requests = [
        TraceRequest(r["submit"], int(r.get("prompt", 0)), int(r.get("max_tokens", 0)),
                     r.get("first"), r.get("end", end_s), int(r.get("out", 0)),
                     bool(r.get("cut", "end" not in r)))
        for r in reqs.values() if "submit" in r
    ]
    with_output = [r for r in requests if r.first_token_s is not None and r.output_tokens]
    if len(with_output) < _MIN_REQUESTS:
        raise TraceError(f"{name} has {len(with_output)} request(s) with output: too few to"
                         f" fit (at least {_MIN_REQUESTS})")
    if not energy or all(len(ts) < 2 for ts, _ in energy.values()):
        raise TraceError(f"{name} has no GPU energy readings to fit power to")
    start_s = min(r.submit_s for r in requests)
    if end_s <= start_s:
        raise TraceError(f"{name} ends before its first request")
    joules = sum(_interp(ts, vs, end_s) - _interp(ts, vs, start_s)
                 for ts, vs in energy.values() if len(ts) >= 2)
    knobs = h.knobs or {}
    batch_limit = knobs.get("batch_limit") or h.config.get("batch_limit") or 64
    tp = int(h.config.get("engine_options", {}).get("tensor_parallel_size", 1) or 1)
    return Trace(name=name, gpu=gpu_spec, model=model_spec, requests=requests,
                 start_s=start_s, end_s=end_s, energy_j=joules,
                 batch_limit=int(batch_limit), n_gpus=tp)


# ---- output -------------------------------------------------------------------------

def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "-"
    return f"{v:.4g}"


def _pct(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:+.1%}"


def error_table(rows: list[tuple[str, str, dict[str, float], dict[str, float],
                                 dict[str, float]]]) -> str:
    """rows: (session, role, measured, default twin, fitted twin)."""
    lines = ["| session | role | metric | measured | default twin | err | fitted twin | err |",
             "|---|---|---|---|---|---|---|---|"]
    for name, role, meas, before, after in rows:
        e0, e1 = errors(before, meas), errors(after, meas)
        for k in METRICS:
            lines.append(f"| {name} | {role} | {_LABELS[k]} | {_fmt(meas[k])} | "
                         f"{_fmt(before[k])} | {_pct(e0[k])} | {_fmt(after[k])} | "
                         f"{_pct(e1[k])} |")
    return "\n".join(lines)


def _error(msg: str) -> int:
    print(f"wattflow: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        return _error(f"{out} already exists (--force overwrites it)")
    if args.max_evals < 1:
        return _error("--max-evals must be at least 1")
    try:
        fitted = [session_trace(s, model=args.model, gpu=args.gpu) for s in args.sessions]
        checks = [session_trace(s, model=args.model, gpu=args.gpu) for s in args.check]
    except (SessionError, TraceError, ValueError) as exc:
        return _error(str(exc))
    kinds = {(t.gpu.key, t.model.name, t.n_gpus) for t in fitted + checks}
    if len(kinds) > 1:
        return _error("the sessions ran different GPUs or models: " + "; ".join(
            f"{g} {m} x{n}" for g, m, n in sorted(kinds)) + " (calibrate them separately)")
    first = fitted[0]
    print(f"calibrate: {len(fitted)} session(s), {first.model.name} on "
          f"{first.gpu.name.removesuffix(' (simulated)')}"
          f"{f' x{first.n_gpus}' if first.n_gpus > 1 else ''}; fitting with at most "
          f"{args.max_evals} replays ...", flush=True)
    t0 = time.perf_counter()
    result = fit(fitted, max_evals=args.max_evals)
    wall = time.perf_counter() - t0
    base_c, base_p = Calibration(), PowerCoefficients()
    rows = []
    for role, traces in (("fitted", fitted), ("check", checks)):
        for tr in traces:
            rows.append((tr.name, role, tr.measured, replay(tr, base_c, base_p),
                         replay(tr, result.calibration, result.power)))
    print(error_table(rows))
    fit_info = {
        "sessions": [t.name for t in fitted],
        "checked": [t.name for t in checks],
        "evals": result.evals,
        "cost": result.cost,
        "errors": {name: {"role": role, **{k: v for k, v in errors(after, meas).items()
                                          if math.isfinite(v)}}
                   for name, role, meas, _b, after in rows},
    }
    profile = TwinProfile(calibration=result.calibration, power=result.power,
                          gpu=first.gpu.key, model=first.model.key or first.model.name,
                          fit=fit_info)
    try:
        save_profile(profile, out)
    except OSError as exc:
        return _error(f"cannot write {out}: {exc.strerror or exc}")
    print(f"profile: {out} ({result.evals} replays, {wall:.1f} s); use it with "
          f"--engine sim -E profile={out}")
    return 0
