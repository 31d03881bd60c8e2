"""`wattflow report` on small hand-built sessions whose numbers are known."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.commands import report
from app.core.events import EndEvent, Event, KnobEvent, RequestEvent, Sample, SessionHeader
from app.core.session_reader import SessionError, summarize
from app.core.session_writer import SessionRecorder


def req(t_s: float, rid: str, stage: str, phase: str, **kw: Any) -> RequestEvent:
    return RequestEvent(t_s=t_s, request_id=rid, stage=stage, phase=phase, workflow_id="w0", **kw)


def build_session(
    path: Path, *, gpu_w: float = 300.0, close: bool = True, cut: bool = False
) -> None:
    """10 s of samples (GPU at `gpu_w`, CPU at 50 W, cumulative counters), four `map`
    requests (latency 1..4 s, 100 tokens, 200 J GPU + 20 J CPU each), one `reduce`
    request (50 tokens, 150 J) and one failed `reduce`, a power-cap change at 5 s."""
    rec = SessionRecorder(path)
    rec.open(
        SessionHeader(
            t_s=0.0,
            name=path.stem,
            started_unix_s=1_700_000_000.0,
            engine={"name": "sim", "model": "llama-8b"},
            workload={"name": "sequential"},
            knobs={"power_cap": 700.0},
        )
    )
    events: list[Event] = []
    for i in range(21):
        t = i * 0.5
        events.append(
            Sample(
                t_s=t,
                device="gpu0",
                component="gpu",
                energy_mj=gpu_w * 1000 * t,
                power_w=gpu_w + (50 if t >= 5 else 0),
            )
        )
        events.append(Sample(t_s=t, device="cpu0", component="cpu", energy_mj=50_000 * t))
    for i in range(4):
        rid = f"m{i}"
        events.append(req(1.0, rid, "map", "submitted"))
        events.append(req(1.2, rid, "map", "first_token", ttft_s=0.2))
        events.append(
            req(
                1.0 + (i + 1),
                rid,
                "map",
                "finished",
                prompt_tokens=1000,
                output_tokens=100,
                latency_s=float(i + 1),
                ttft_s=0.2,
                tpot_s=0.01,
                energy_j={"gpu": 200.0, "cpu": 20.0},
            )
        )
    events += [
        req(6.0, "r0", "reduce", "submitted"),
        req(
            8.0,
            "r0",
            "reduce",
            "finished",
            output_tokens=50,
            latency_s=2.0,
            ttft_s=0.5,
            energy_j={"gpu": 150.0},
        ),
        req(6.0, "r1", "reduce", "submitted"),
        req(9.0, "r1", "reduce", "failed", latency_s=3.0, reason="timeout"),
        KnobEvent(t_s=5.0, knob="power_cap", value=400.0, previous=700.0, source="ui"),
    ]
    events.sort(key=lambda e: e.t_s)
    for ev in events:
        rec.write(ev)
    if close:
        rec.close(EndEvent(t_s=10.0, summary={"requests_finished": 5}))
    else:
        rec.abort()
    if cut:
        with open(path, "ab") as f:
            f.write(b'{"kind":"sample","t_s":10.5,"dev')


def ns(*sessions: Path | str, **kw: object) -> argparse.Namespace:
    return argparse.Namespace(
        sessions=[str(s) for s in sessions],
        csv=kw.get("csv"),
        json=kw.get("json", False),
        plot=kw.get("plot"),
        exact=kw.get("exact", False),
    )


@pytest.fixture
def session(tmp_path: Path) -> Path:
    path = tmp_path / "run1.jsonl"
    build_session(path)
    return path


def test_analyse_numbers(session: Path) -> None:
    r = report.analyse(session)
    s = r.stats
    assert s.energy_j["gpu"] == pytest.approx(3000.0)
    assert s.energy_j["cpu"] == pytest.approx(500.0)
    assert s.output_tokens == 450
    assert s.j_per_output_token == pytest.approx(3500.0 / 450)
    stages = {x.stage: x for x in s.stages}
    assert stages["map"].count == 4 and stages["map"].energy_j == pytest.approx(880.0)
    assert stages["reduce"].failed == 1
    assert r.end is not None and not r.truncated and r.notes == [report.NO_WINDOW_NOTE]


def test_sketched_quantiles_are_within_one_percent_and_exact_ones_exact(
        session: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exact = {"p50": 2.5, "p90": 3.7, "p99": 3.97}  # map's latencies 1, 2, 3, 4 s
    sketched = report.analyse(session).stats
    by_stage = {x.stage: x for x in sketched.stages}
    got = (by_stage["map"].latency_p50_s, by_stage["map"].latency_p90_s,
           by_stage["map"].latency_p99_s)
    assert got == pytest.approx(tuple(exact.values()), rel=0.01)
    assert got != pytest.approx(tuple(exact.values()), rel=1e-6)  # a sketch, not a list
    assert sketched.quantile_relative_error == 0.01
    assert report.run(ns(session)) == 0
    assert "quantiles: DDSketch, within 1% of the exact value" in capsys.readouterr().out
    exact_stats = report.analyse(session, exact=True).stats
    assert exact_stats.quantile_relative_error == 0.0
    assert {x.stage: x for x in exact_stats.stages}["map"].latency_p50_s == 2.5
    assert report.run(ns(session, exact=True)) == 0
    assert "quantiles: exact (--exact)" in capsys.readouterr().out


def test_table_has_stage_rows_and_totals(session: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.run(ns(session, exact=True)) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    map_row = next(x for x in lines if "│ map " in x)
    # count, failed, p50 (interpolated 2.5), p90, p99, TTFT p50, out tokens, J, J/token
    for cell in ("4", "0", "2.500", "3.700", "3.970", "0.200", "400", "880.0", "2.2000"):
        assert f" {cell} " in map_row, cell
    reduce_row = next(x for x in lines if "│ reduce " in x)
    assert " 1 " in reduce_row and " 150.0 " in reduce_row
    totals = {
        "duration": "10.0 s",
        "output tokens/s": "45.0",
        "GPU energy J": "3,000.0",
        "CPU energy J": "500.0",
        "avg GPU power W": "300.0",
        "J per output token": "7.7778",
        "GPU J per output token": "6.6667",
        "idle energy J": "2,470.0",
    }
    for key, value in totals.items():
        row = next(x for x in lines if f" {key} " in x)
        assert value in row, key
    assert "DRAM" not in out  # no DRAM meter in this session
    assert report.CUT_NOTE not in out and report.OPEN_NOTE not in out


def test_json_output(session: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.run(ns(session, json=True)) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["schema"] == 1
    (s,) = doc["sessions"]
    assert s["session"] == "run1.jsonl" and s["complete"] and not s["truncated"]
    assert doc["totals"] == s["totals"]  # one session: `jq .totals` is its totals
    t = s["totals"]
    assert t["energy_j"] == {"gpu": pytest.approx(3000.0), "cpu": pytest.approx(500.0)}
    assert t["j_per_output_token"] == pytest.approx(3500.0 / 450)
    assert t["window_end_s"] is None and t["drain"] is None  # recorded before windows
    assert {x["stage"]: x["count"] for x in s["stages"]} == {"map": 4, "reduce": 1}
    assert s["knobs"]["power_cap"] == 400.0


def test_csv_rows_for_several_sessions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    build_session(a)
    build_session(b, gpu_w=200.0)
    out_csv = tmp_path / "out.csv"
    assert report.run(ns(a, b, csv=str(out_csv))) == 0
    out = capsys.readouterr().out
    assert "comparison" in out
    comp = out[out.index("comparison") :]
    assert "a.jsonl" in comp and "b.jsonl" in comp
    assert "7.7778" in comp and f"{2500 / 450:.4f}" in comp  # J/token of each
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == report.CSV_COLUMNS
    assert [(r["session"], r["stage"]) for r in rows] == [
        ("a.jsonl", "map"),
        ("a.jsonl", "reduce"),
        ("b.jsonl", "map"),
        ("b.jsonl", "reduce"),
    ]
    assert float(rows[0]["energy_j"]) == 880.0
    assert rows[1]["cpu_j"] == "0.0"  # a CPU meter ran, and gave reduce nothing
    assert rows[1]["failed"] == "1" and rows[1]["cancelled"] == "0"


def test_cut_and_unclosed_sessions_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut, open_ = tmp_path / "cut.jsonl", tmp_path / "open.jsonl"
    build_session(cut, close=False, cut=True)
    build_session(open_, close=False)
    assert report.run(ns(cut)) == 0
    out = capsys.readouterr().out
    assert report.CUT_NOTE in out and report.OPEN_NOTE not in out
    assert report.run(ns(open_)) == 0
    out = capsys.readouterr().out
    assert report.OPEN_NOTE in out and report.CUT_NOTE not in out


def test_a_mark_of_megabytes_prints_clipped_with_its_length(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "big.jsonl"
    label = "y" * (2 * 1024 * 1024)
    path.write_bytes(b'{"kind":"session","version":1}\n'
                     + orjson.dumps({"kind": "mark", "t_s": 1.0, "label": label}) + b"\n"
                     + b'{"kind":"mark","t_s":1.5,"label":"short one"}\n'
                     + b'{"kind":"end","t_s":2.0,"reason":"completed","summary":{}}\n')
    assert report.run(ns(path)) == 0
    out = capsys.readouterr().out
    assert "mark at t=1.5 s: short one" in out  # a label of ordinary length, whole
    assert f"({len(label):,} characters; the session holds it whole)" in out
    assert out.count("y") < report.MAX_TEXT_CHARS + 100  # not the 2 MB of it


def test_plot_writes_a_png(session: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "power.png"
    assert report.run(ns(session, plot=str(png))) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = report.analyse(session, keep_series=True)
    assert len(r.gpu_power["gpu0"].t_s) == 21
    assert [(k.knob, k.value) for k in r.knob_changes] == [("power_cap", 400.0)]


def test_plot_without_matplotlib_is_one_line(
    session: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    assert report.run(ns(session, plot=str(tmp_path / "p.png"))) == 2
    err = capsys.readouterr().err
    assert err.startswith("wattflow: error: ") and "matplotlib" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("bad", ["missing", "not_session", "empty"])
def test_user_errors_are_one_line_exit_2(
    tmp_path: Path, session: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{bad}.jsonl"
    if bad == "not_session":
        path.write_text("a,b,c\n1,2,3\n")
    elif bad == "empty":
        path.write_text("")
    # A good session first: nothing is printed for it when a later one is bad.
    assert report.run(ns(session, path)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("wattflow: error: ") and captured.err.count("\n") == 1


def test_unwritable_csv_is_a_user_error(session: Path, tmp_path: Path) -> None:
    assert report.run(ns(session, csv=str(tmp_path / "no" / "dir" / "x.csv"))) == 2


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.lists(st.integers(-(2**40), 2**40), max_size=2),
    st.integers(-(2**62), 2**62),
    st.dictionaries(st.text(max_size=3), st.floats(), max_size=2),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["sample", "request", "knob", "workflow", "end", "engine_state"]),
    fields=st.dictionaries(
        st.sampled_from(
            [
                "energy_mj",
                "power_w",
                "device",
                "component",
                "phase",
                "stage",
                "latency_s",
                "output_tokens",
                "energy_j",
                "value",
                "knob",
                "summary",
                "output_tokens_total",
                "source",
            ]
        ),
        _values,
        max_size=5,
    ),
)
def test_wrongly_typed_events_give_a_session_error(kind: str, fields: dict[str, object]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bad.jsonl"
        line = orjson.dumps({"kind": kind, "t_s": 1.0, **fields})
        path.write_bytes(b'{"kind":"session","version":1}\n' + line + b"\n")
        for check in (report.analyse, summarize):  # summarize recomputes: no end record
            try:
                check(path)
            except SessionError as e:
                assert "\n" not in str(e)
