"""The quantile sketch: within its stated relative error of the exact quantiles (on
synthetic streams and on recorded sessions), bounded in size whatever it is fed, and
mergeable exactly."""

from __future__ import annotations

import gzip
import random
from pathlib import Path
from typing import Any

import pytest

from app.core.events import RequestEvent, WorkflowEvent
from app.core.quantiles import BIN_LIMIT, RELATIVE_ACCURACY, ExactQuantiles, Sketch
from app.core.session_reader import open_session
from app.core.stats import LiveStats, StatsSnapshot
from app.core.stats_window import WindowStats
from tests.data.make_golden import GOLDEN

ROOT = Path(__file__).resolve().parents[2]
PS = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)


def exact_q(values: list[float], p: float) -> float:
    """numpy's default ("linear") quantile, written out."""
    v = sorted(values)
    pos = p * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def within(sketched: float | None, exact: float | None, what: str) -> None:
    assert (sketched is None) == (exact is None), what
    if sketched is not None and exact is not None:
        assert abs(sketched - exact) <= RELATIVE_ACCURACY * abs(exact) + 1e-12, (
            f"{what}: {sketched} vs exact {exact}")


@pytest.mark.parametrize("draw", [
    lambda r: r.lognormvariate(0.0, 1.5),  # latency-like, heavy tail
    lambda r: r.uniform(0.001, 0.002),  # TPOT-like, narrow
    lambda r: r.expovariate(1.0) if r.random() < 0.9 else 0.0,  # zeros mixed in
    lambda r: float(r.randint(1, 5)),  # few distinct values: interpolation between ranks
])
def test_sketch_quantiles_are_within_the_stated_error(draw: Any) -> None:
    rnd = random.Random(3)
    for n in (1, 2, 3, 10, 1000, 20_000):
        values = [draw(rnd) for _ in range(n)]
        sk, ex = Sketch(), ExactQuantiles()
        for v in values:
            sk.add(v)
            ex.add(v)
        assert len(sk) == len(ex) == n
        for p in PS:
            e = exact_q(values, p)
            assert ex.q(p) == pytest.approx(e, rel=1e-12, abs=1e-15)
            within(sk.q(p), e, f"n={n} p={p}")


def test_empty_and_non_finite_values() -> None:
    for q in (Sketch(), ExactQuantiles()):
        assert q.q(0.5) is None and len(q) == 0
        q.add(float("nan"))
        q.add(float("inf"))
        assert len(q) == 0
        q.add(2.0)
        within(q.q(0.0), 2.0, "one value")
        within(q.q(1.0), 2.0, "one value")


def test_merged_sketches_equal_one_sketch_of_everything() -> None:
    rnd = random.Random(5)
    parts = [[rnd.lognormvariate(i, 1.0) for _ in range(3000)] for i in range(3)]
    whole, merged = Sketch(), Sketch()
    for part in parts:
        s = Sketch()
        for v in part:
            s.add(v)
            whole.add(v)
        merged.merge(s)
    every = [v for part in parts for v in part]
    for p in PS:
        assert merged.q(p) == whole.q(p)
        within(merged.q(p), exact_q(every, p), f"merged p={p}")
    exact = ExactQuantiles()
    for part in parts:
        e = ExactQuantiles()
        for v in part:
            e.add(v)
        exact.merge(e)
    assert exact.q(0.9) == pytest.approx(exact_q(every, 0.9))
    copy = merged.copy()
    copy.add(1e6)
    assert len(copy) == len(merged) + 1


def test_sketch_size_is_bounded_whatever_it_is_fed() -> None:
    s = Sketch()
    rnd = random.Random(1)
    for _ in range(20_000):  # values over 600 orders of magnitude, both signs
        s.add(rnd.choice((1, -1)) * 10 ** rnd.uniform(-300, 300))
    assert s.bins <= 2 * (BIN_LIMIT + 128)  # the store grows in chunks of 128 bins
    # within a range, the bins are set by the range, not by the count
    t = Sketch()
    for v in (0.001, 1000.0):
        t.add(v)
    bins = t.bins
    for _ in range(100_000):
        t.add(10 ** rnd.uniform(-3, 3))
    assert t.bins == bins and len(t) == 100_002


# -- recorded sessions ------------------------------------------------------------------


def _sessions(tmp_path: Path) -> list[Path]:
    golden = tmp_path / "golden.jsonl"
    golden.write_bytes(gzip.decompress(GOLDEN.read_bytes()))
    samples = sorted((ROOT / "sessions").glob("sample-*.jsonl"))
    assert samples
    return [*samples, golden]


def _replay(path: Path, exact: bool) -> tuple[StatsSnapshot, dict[str, list[float]]]:
    """The session through LiveStats; and the raw values of its finished requests."""
    stream = open_session(path)
    stats = LiveStats(exact=exact)
    stats.on_event(stream.header)
    raw: dict[str, list[float]] = {"latency": [], "ttft": [], "tpot": [], "workflow": []}
    for ev in stream:
        stats.on_event(ev)
        if isinstance(ev, RequestEvent) and ev.phase == "finished":
            for name, v in (("latency", ev.latency_s), ("tpot", ev.tpot_s)):
                if v is not None:
                    raw[name].append(v)
        if isinstance(ev, RequestEvent) and ev.phase == "first_token" and ev.ttft_s is not None:
            raw["ttft"].append(ev.ttft_s)
        if isinstance(ev, WorkflowEvent) and ev.phase == "finished" and ev.latency_s is not None:
            raw["workflow"].append(ev.latency_s)
    if stream.end is not None:
        stats.on_event(stream.end)
    return stats.snapshot(), raw


_Q_FIELDS = ("latency_p50_s", "latency_p90_s", "latency_p99_s", "ttft_p50_s", "ttft_p90_s",
             "tpot_p50_s")


def test_sketched_quantiles_of_recorded_sessions_are_within_the_stated_error(
        tmp_path: Path) -> None:
    for path in _sessions(tmp_path):
        sk, raw = _replay(path, exact=False)
        ex, _ = _replay(path, exact=True)
        assert sk.quantile_relative_error == RELATIVE_ACCURACY and ex.quantile_relative_error == 0
        assert len(raw["latency"]) >= 3 and len(raw["ttft"]) >= 15, path.name
        # against the values read straight from the file
        for name, field in (("latency", "latency"), ("ttft", "ttft"), ("tpot", "tpot")):
            for p in (0.5, 0.9, 0.99):
                key = f"{field}_p{round(p * 100)}_s"
                e = exact_q(raw[name], p)
                assert getattr(ex, key) == pytest.approx(e, rel=1e-12), (path.name, key)
                within(getattr(sk, key), e, f"{path.name} {key}")
        within(sk.workflow_latency_p90_s, exact_q(raw["workflow"], 0.9) if raw["workflow"]
               else None, f"{path.name} workflow p90")
        # every quantile the stats show: per stage, per view, per knob segment
        for a, b in zip(sk.stages, ex.stages, strict=True):
            for f in (*_Q_FIELDS[:4], "tpot_p50_s"):
                within(getattr(a, f), getattr(b, f), f"{path.name} {a.stage} {f}")
        spans: list[tuple[str, WindowStats, WindowStats]] = [
            (name, sk.views[name], ex.views[name]) for name in sk.views]
        spans += [(f"segment {i}", a, b) for i, (a, b) in
                  enumerate(zip(sk.knob_segments, ex.knob_segments, strict=True))]
        for name, a, b in spans:
            assert a.requests_finished == b.requests_finished
            for f in _Q_FIELDS:
                within(getattr(a, f), getattr(b, f), f"{path.name} {name} {f}")
