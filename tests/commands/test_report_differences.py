"""`wattflow report A B`: the per-stage difference table (B minus A, and relative, sign
shown), in the printed report and in `--json`, on hand-built sessions whose numbers are
known."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
import pytest

from app.commands import report
from app.core.compare import METRICS, RUN_ROW, Difference, differences, format_difference
from app.core.events import EndEvent, Event, RequestEvent, Sample, SessionHeader
from app.core.session_writer import SessionRecorder

DURATION_S = 10.0


def build(path: Path, *, map_j: float, map_latency_s: float, gpu_w: float,
          extra_stage: bool = False) -> None:
    """10 s at `gpu_w` on one GPU; four `map` requests of 100 tokens, `map_j` J and
    `map_latency_s` each; with `extra_stage`, one `check` request of 50 tokens, 40 J."""
    rec = SessionRecorder(path)
    rec.open(SessionHeader(t_s=0.0, name=path.stem, engine={"name": "sim"},
                           workload={"name": "t"}))
    events: list[Event] = [Sample(t_s=float(t), device="gpu0", component="gpu",
                                  energy_mj=gpu_w * 1000 * t, power_w=gpu_w)
                           for t in range(int(DURATION_S) + 1)]
    for i in range(4):
        events.append(RequestEvent(t_s=1.0, request_id=f"m{i}", stage="map", phase="submitted"))
        events.append(RequestEvent(
            t_s=1.0 + map_latency_s, request_id=f"m{i}", stage="map", phase="finished",
            output_tokens=100, latency_s=map_latency_s, energy_j={"gpu": map_j}))
    if extra_stage:
        events.append(RequestEvent(t_s=2.0, request_id="c", stage="check", phase="submitted"))
        events.append(RequestEvent(t_s=3.0, request_id="c", stage="check", phase="finished",
                                   output_tokens=50, latency_s=1.0, energy_j={"gpu": 40.0}))
    events.sort(key=lambda e: e.t_s)
    for ev in events:
        rec.write(ev)
    rec.close(EndEvent(t_s=DURATION_S))


def ns(*sessions: Path, as_json: bool = False) -> argparse.Namespace:
    return argparse.Namespace(sessions=[str(s) for s in sessions], csv=None, json=as_json,
                              plot=None, exact=True)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    build(a, map_j=200.0, map_latency_s=4.0, gpu_w=300.0)
    build(b, map_j=150.0, map_latency_s=5.0, gpu_w=250.0, extra_stage=True)
    return a, b


def test_differences_per_stage_are_b_minus_a(pair: tuple[Path, Path]) -> None:
    ra, rb = (report.analyse(p, exact=True) for p in pair)
    rows = {r.stage: r.figures for r in differences(ra.stats, rb.stats)}
    assert list(rows) == ["map", "check", RUN_ROW]  # A's stages, then B's new ones
    m = rows["map"]
    assert m["j_per_output_token"].a == pytest.approx(2.0)  # 800 J / 400 tokens
    assert m["j_per_output_token"].b == pytest.approx(1.5)
    assert m["j_per_output_token"].diff == pytest.approx(-0.5)
    assert m["j_per_output_token"].relative == pytest.approx(-0.25)
    assert m["energy_j"].diff == pytest.approx(-200.0)
    assert m["latency_p90_s"].diff == pytest.approx(1.0)
    assert m["latency_p90_s"].relative == pytest.approx(0.25)
    assert m["tokens_per_s"].diff == pytest.approx(0.0)  # 400 tokens in 10 s each
    # a stage of B alone: A's side is missing, so there is no difference
    c = rows["check"]
    assert c["j_per_output_token"].a is None and c["j_per_output_token"].b == pytest.approx(0.8)
    assert c["j_per_output_token"].diff is None
    run = rows[RUN_ROW]
    assert run["energy_j"].a == pytest.approx(3000.0) and run["energy_j"].b == pytest.approx(2500.0)
    assert run["j_per_output_token"].diff == pytest.approx(2500 / 450 - 3000 / 400)
    assert run["tokens_per_s"].diff == pytest.approx(5.0)


def test_better_follows_each_figures_direction() -> None:
    jpt, tps = METRICS[0], METRICS[1]
    assert Difference(2.0, 1.5).better(jpt) is True  # fewer joules per token
    assert Difference(2.0, 1.5).better(tps) is False  # fewer tokens per second
    assert Difference(2.0, 2.0).better(jpt) is None
    assert Difference(None, 2.0).better(jpt) is None
    assert Difference(0.0, 1.0).relative is None  # relative to zero: none
    assert format_difference(Difference(2.0, 1.5), jpt) == "-0.5000 (-25.0%)"
    assert format_difference(Difference(100.0, 112.5), tps) == "+12.5 (+12.5%)"
    assert format_difference(Difference(1.0, 1.0), jpt) == "0"
    assert format_difference(Difference(None, 1.0), jpt) == "-"


def test_printed_report_has_the_difference_table(pair: tuple[Path, Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert report.run(ns(*pair)) == 0
    out = capsys.readouterr().out
    assert "differences: b.jsonl minus a.jsonl" in out
    table = out[out.index("differences:"):]
    map_line = next(line for line in table.splitlines() if "map" in line)
    assert "-0.5000 (-25.0%)" in map_line  # J/token
    assert "+1.000 (+25.0%)" in map_line  # p90 latency
    assert "-200.0 (-25.0%)" in map_line  # joules
    assert "check (B only)" in table
    run_line = next(line for line in table.splitlines() if RUN_ROW in line)
    assert "-500.0 (-16.7%)" in run_line


def test_one_session_has_no_difference_table(pair: tuple[Path, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert report.run(ns(pair[0])) == 0
    assert "differences" not in capsys.readouterr().out
    assert report.run(ns(pair[0], as_json=True)) == 0
    assert orjson.loads(capsys.readouterr().out)["differences"] == []


def test_json_differences(pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert report.run(ns(*pair, as_json=True)) == 0
    doc = orjson.loads(capsys.readouterr().out)
    (d,) = doc["differences"]
    assert d["a"] == "a.jsonl" and d["b"] == "b.jsonl"
    assert [s["stage"] for s in d["stages"]] == ["map", "check"]
    jpt = d["stages"][0]["j_per_output_token"]
    assert jpt["a"] == pytest.approx(2.0) and jpt["b"] == pytest.approx(1.5)
    assert jpt["diff"] == pytest.approx(-0.5) and jpt["relative"] == pytest.approx(-0.25)
    assert jpt["better"] is True
    assert d["stages"][0]["latency_p90_s"]["better"] is False
    assert (d["stages"][1]["in_a"], d["stages"][1]["in_b"]) == (False, True)
    assert d["stages"][1]["energy_j"] == {"a": None, "b": pytest.approx(40.0), "diff": None,
                                          "relative": None, "better": None}
    assert d["run"]["stage"] == RUN_ROW
    assert d["run"]["energy_j"]["diff"] == pytest.approx(-500.0)


def test_three_sessions_each_against_the_first(pair: tuple[Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    c = tmp_path / "c.jsonl"
    build(c, map_j=100.0, map_latency_s=4.0, gpu_w=300.0)
    assert report.run(ns(*pair, c, as_json=True)) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert [(d["a"], d["b"]) for d in doc["differences"]] == [("a.jsonl", "b.jsonl"),
                                                              ("a.jsonl", "c.jsonl")]
    assert doc["differences"][1]["stages"][0]["energy_j"]["diff"] == pytest.approx(-400.0)
