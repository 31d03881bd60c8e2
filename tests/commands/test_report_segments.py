"""`report` per knob segment, and the same figures live, in the end record and in the
report: the golden configuration (composite on the twin, virtual time, batch limit
64 -> 8 at 15 s and power cap 700 -> 400 W at 30 s) recorded, then reported."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.commands import report
from tests.data.make_golden import record
from tests.session_records import session_records


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seg") / "golden-now.jsonl"
    record(path)
    return path


def ns(path: Path, **kw: Any) -> argparse.Namespace:
    return argparse.Namespace(sessions=[str(path)], csv=None, plot=None,
                              json=kw.get("json", False), exact=kw.get("exact", False))


def same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_the_live_figures_in_the_end_record_are_what_report_computes(session: Path) -> None:
    end = session_records(session)[-1]
    live = end["summary"]
    again = report.analyse(session).stats.to_dict()
    for key in ("views", "knob_segments", "streamed_output_tokens", "streamed_tokens_per_s",
                "j_per_streamed_token", "first_tokens", "ttft_p90_s", "latency_p90_s",
                "tpot_p99_s", "recent_tokens_per_s"):
        same(live[key], again[key], key)


def test_report_has_a_row_per_knob_segment(session: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert report.run(ns(session)) == 0
    out = capsys.readouterr().out
    assert "per knob segment" in out
    rows = [line for line in out.splitlines() if "->" in line and "│" in line]
    assert len(rows) == 2
    assert "batch_limit 64 -> 8" in rows[0] and "power_cap 700 W -> 400 W" in rows[1]
    assert any("(start)" in line for line in out.splitlines())


def test_report_json_knob_segments(session: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.run(ns(session, json=True)) == 0
    doc = orjson.loads(capsys.readouterr().out)
    (s,) = doc["sessions"]
    segs = s["knob_segments"]
    assert [x["changes"] for x in segs] == [[], ["batch_limit 64 -> 8"],
                                            ["power_cap 700 W -> 400 W"]]
    assert [x["start_s"] for x in segs] == pytest.approx([0.0, 15.0, 30.0], abs=1e-6)
    assert [x["knobs"]["power_cap"] for x in segs] == [700.0, 700.0, 400.0]
    assert [x["knobs"]["batch_limit"] for x in segs] == [64, 8, 8]
    for x in segs:
        assert x["end_s"] > x["start_s"] and x["tokens_per_s"] > 0
        assert x["j_per_token"] == pytest.approx(x["energy_j"] / x["streamed_tokens"])
        assert x["tokens_per_s"] == pytest.approx(x["streamed_tokens"] / x["duration_s"],
                                                  rel=1e-3)
        assert x["latency_p90_s"] > 0
    # the segments add up to the whole run's streamed tokens and energy
    t = s["totals"]
    assert sum(x["streamed_tokens"] for x in segs) == pytest.approx(
        t["streamed_output_tokens"], abs=len(segs))
    assert sum(x["energy_j"] for x in segs) == pytest.approx(t["energy_total_j"], rel=1e-6)
    assert t["j_per_streamed_token"] == pytest.approx(t["j_per_generated_token"])
    assert t["quantile_relative_error"] == 0.01


def test_exact_report_quantiles_are_within_the_sketch_error(
        session: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.run(ns(session, json=True)) == 0
    sketched = orjson.loads(capsys.readouterr().out)
    assert report.run(ns(session, json=True, exact=True)) == 0
    exact = orjson.loads(capsys.readouterr().out)
    assert exact["totals"]["quantile_relative_error"] == 0
    for key in ("latency_p50_s", "latency_p90_s", "latency_p99_s", "ttft_p90_s", "tpot_p50_s"):
        assert sketched["totals"][key] == pytest.approx(exact["totals"][key], rel=0.01), key
    for a, b in zip(sketched["sessions"][0]["knob_segments"],
                    exact["sessions"][0]["knob_segments"], strict=True):
        assert a["latency_p90_s"] == pytest.approx(b["latency_p90_s"], rel=0.01)
        assert a["j_per_token"] == b["j_per_token"]  # not a quantile: the same
