"""Fitting the twin to recorded runs (engines/sim/trace_fit.py), on synthetic traces
whose true coefficients are known."""

from __future__ import annotations

import dataclasses
import random

import pytest

from engines.sim.power import PowerCoefficients
from engines.sim.roofline import Calibration
from engines.sim.specs import GPUS, MODELS
from engines.sim.trace_fit import Trace, TraceRequest, errors, fit, measure, replay

TRUE_CAL = dataclasses.replace(Calibration(), overhead_s=0.02, eff_kv=0.05)
TRUE_POWER = dataclasses.replace(PowerCoefficients(), gap_w=40.0)


def _trace(batch_limit: int, seed: int) -> Trace:
    """Requests arriving at 4/s for 20 s; the 'measured' values are the true twin's."""
    rng = random.Random(seed)
    reqs, t = [], 0.0
    for _ in range(80):
        t += rng.expovariate(4.0)
        reqs.append(TraceRequest(t, rng.randint(500, 1500), rng.randint(100, 300), None,
                                 None, 0))
    tr = Trace(name=f"b{batch_limit}", gpu=GPUS["h100"], model=MODELS["llama-1b"],
               requests=reqs, start_s=reqs[0].submit_s, end_s=reqs[0].submit_s + 30.0,
               energy_j=1.0, batch_limit=batch_limit, measured={"tokens_per_s": 1.0})
    tr.measured = replay(tr, TRUE_CAL, TRUE_POWER)
    return tr


def test_measure_counts_tokens_power_and_the_unqueued_ttft() -> None:
    reqs = [TraceRequest(0.0, 100, 10, 0.5, 2.3, 10),  # TPOT 0.2
            TraceRequest(1.0, 100, 10, 1.2, 3.0, 10),  # TPOT 0.2
            TraceRequest(1.5, 100, 10, 9.0, 10.0, 3, cut=True)]  # waited for a slot
    m = measure(reqs, 0.0, 10.0, 2000.0, batch_limit=2)
    assert m["tokens_per_s"] == pytest.approx(2.3)
    assert m["power_w"] == pytest.approx(200.0)
    assert m["j_per_token"] == pytest.approx(2000.0 / 23)
    assert m["tpot_p50_s"] == pytest.approx(0.2)
    assert m["ttft_p50_s"] == pytest.approx(0.35)  # the third (queued) one is left out


def test_fit_recovers_a_known_twin_from_two_batch_limits() -> None:
    traces = [_trace(4, 1), _trace(32, 2)]
    default = [errors(replay(t, Calibration(), PowerCoefficients()), t.measured)
               for t in traces]
    assert any(abs(e["tpot_p50_s"]) > 0.5 for e in default)  # the default is far off
    result = fit(traces, max_evals=200)
    for t in traces:
        e = errors(replay(t, result.calibration, result.power), t.measured)
        assert abs(e["tpot_p50_s"]) < 0.15, (t.name, e)
        assert abs(e["tokens_per_s"]) < 0.15, (t.name, e)
        assert abs(e["power_w"]) < 0.1, (t.name, e)
    assert result.calibration.overhead_s == pytest.approx(0.02, rel=0.5)
