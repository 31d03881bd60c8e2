"""`sweep --plot DIR`: a figure and its CSV per swept knob, a line per workload and per
value of the other knobs."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from app import cli
from app.commands.sweep_plot import Point, write_sweep_figures

pytest.importorskip("matplotlib")


def _point(workload: str, batch: int, cap: float, jpt: float) -> Point:
    return Point(path=Path(f"{workload}-{batch}-{cap}.jsonl"), workload=workload,
                 knobs={"batch_limit": batch, "power_cap": cap}, j_per_output_token=jpt,
                 tokens_per_s=100.0 * batch, latency_p90_s=1.0 + batch / 10,
                 workflow_latency_p90_s=None, energy_total_j=1000.0, output_tokens=100,
                 requests_finished=10, requests_failed=0)


def test_a_figure_and_its_csv_per_knob_with_a_line_per_workload_and_other_value(
        tmp_path: Path) -> None:
    from PIL import Image

    points = [_point(w, b, c, 1.0 / b + c / 1000) for w in ("sequential", "agentic")
              for b in (1, 4, 16) for c in (450.0, 700.0)]
    written = write_sweep_figures(points, ["batch_limit", "power_cap"], tmp_path / "figs")
    assert sorted(p.name for p in written) == ["batch_limit.csv", "batch_limit.png",
                                               "power_cap.csv", "power_cap.png"]
    with open(tmp_path / "figs" / "batch_limit.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    assert {r["series"] for r in rows} == {
        "sequential, power_cap=450 W", "sequential, power_cap=700 W",
        "agentic, power_cap=450 W", "agentic, power_cap=700 W"}
    first = [r for r in rows if r["series"] == "agentic, power_cap=450 W"]
    assert [r["value"] for r in first] == ["1", "4", "16"]  # in order of the knob
    assert float(first[1]["j_per_output_token"]) == pytest.approx(0.25 + 0.45)
    with open(tmp_path / "figs" / "power_cap.csv") as f:
        series = {r["series"] for r in csv.DictReader(f)}
    assert "agentic, batch_limit=16" in series
    with Image.open(tmp_path / "figs" / "power_cap.png") as im:
        assert im.size[0] > 1000


def test_sweep_plot_from_the_command_line(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    figs = tmp_path / "figs"
    code = cli.main(["sweep", "--fast", "--workload", "interactive", "--rate", "4",
                     "--duration", "15", "--grid", "batch_limit=2,8",
                     "--grid", "power_cap=700,450", "--dir", str(tmp_path / "s"),
                     "--plot", str(figs)])
    assert code == 0
    out = capsys.readouterr().out
    assert f"figures: {figs / 'batch_limit.csv'}" in out
    with open(figs / "batch_limit.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["value"], r["series"]) for r in rows} == {
        ("2", "power_cap=700 W"), ("8", "power_cap=700 W"), ("2", "power_cap=450 W"),
        ("8", "power_cap=450 W")}
    assert all(float(r["j_per_output_token"]) > 0 and float(r["tokens_per_s"]) > 0
               and float(r["latency_p90_s"]) > 0 for r in rows)
    assert (figs / "power_cap.png").stat().st_size > 10_000


def test_sweep_plot_without_matplotlib_is_one_line_before_any_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    code = cli.main(["sweep", "--fast", "--duration", "5", "--grid", "batch_limit=2",
                     "--dir", str(tmp_path / "s"), "--plot", str(tmp_path / "f")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "matplotlib" in err[0]
    assert not (tmp_path / "s").exists()


def test_sweep_plot_into_a_file_is_refused_before_any_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "figs"
    target.write_text("not a folder")
    code = cli.main(["sweep", "--fast", "--duration", "5", "--grid", "batch_limit=2",
                     "--dir", str(tmp_path / "s"), "--plot", str(target)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a folder" in err[0]
    assert not (tmp_path / "s").exists()
