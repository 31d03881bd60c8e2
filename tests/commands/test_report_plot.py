"""`report --plot`: power per GPU, the cap as a stepped line where it changed, and
knob changes and marks labelled without overlap (clustered presses share a label)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.commands.report_plot import (
    CHAR_PT,
    Moment,
    place_labels,
    read_series,
    write_power_plot,
)
from app.core.events import EndEvent, Event, KnobEvent, MarkEvent, Sample, SessionHeader
from app.core.session_writer import SessionRecorder


def _session(path: Path) -> None:
    """Two GPUs for 100 s, their limit 700 W then 450 W from 40 s; three batch-limit
    presses within half a second at 20 s, marks at 20.1 s and 70 s."""
    rec = SessionRecorder(path)
    rec.open(SessionHeader(t_s=0.0, name=path.stem, engine={"name": "sim", "model": "m"},
                           workload={"name": "interactive"}, knobs={"power_cap": 700.0}))
    events: list[Event] = []
    for i in range(201):
        t = i * 0.5
        limit = 700.0 if t < 40 else 450.0
        for d, w in (("gpu0", 600.0), ("gpu1", 500.0)):
            events.append(Sample(t_s=t, device=d, component="gpu", energy_mj=w * 1000 * t,
                                 power_w=min(w, limit), power_limit_w=limit))
    events += [
        KnobEvent(t_s=20.0, knob="batch_limit", value=32, previous=64, source="ui"),
        KnobEvent(t_s=20.2, knob="batch_limit", value=16, previous=32, source="ui"),
        KnobEvent(t_s=20.4, knob="batch_limit", value=8, previous=16, source="ui"),
        MarkEvent(t_s=20.1, label="m1"),
        KnobEvent(t_s=40.0, knob="power_cap", value=450.0, previous=700.0, source="ui"),
        MarkEvent(t_s=70.0, label="m2"),
    ]
    events.sort(key=lambda e: e.t_s)
    for ev in events:
        rec.write(ev)
    rec.close(EndEvent(t_s=100.0))


def test_series_hold_power_per_gpu_the_cap_steps_knob_changes_and_marks(
        tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    _session(path)
    d = read_series(path)
    assert sorted(d.power) == ["gpu0", "gpu1"] and len(d.power["gpu0"][0]) == 201
    assert d.caps["gpu0"] == ([0.0, 40.0], [700.0, 450.0])  # one step, where it changed
    assert [(m.kind, m.t_s) for m in d.moments] == [
        ("knob", 20.0), ("mark", 20.1), ("knob", 20.2), ("knob", 20.4), ("knob", 40.0),
        ("mark", 70.0)]


def _overlaps(labels: list[tuple[float, float, int]]) -> bool:
    return any(r1 == r2 and a1 < b2 and a2 < b1
               for i, (a1, b1, r1) in enumerate(labels) for (a2, b2, r2) in labels[i + 1:])


def test_clustered_presses_share_a_label_and_no_labels_overlap() -> None:
    moments = [Moment(20.0 + 0.2 * i, "knob", "", "batch_limit", 64 / 2 ** i, 32 / 2 ** i)
               for i in range(3)]
    moments.append(Moment(20.1, "mark", "m1"))
    # Near each other but far enough apart not to merge: each gets its own label.
    moments += [Moment(30.0 + 2.0 * i, "knob", "", "power_cap", 700 - 25 * i, 675 - 25 * i)
                for i in range(4)]
    moments.append(Moment(99.5, "mark", "the end of the study"))
    axes_pt = 700.0
    placed = place_labels(moments, 0.0, 100.0, axes_pt)
    texts = [p.text for p in placed]
    assert texts[0] == "batch_limit 64 → 8 (3 changes), ◆ m1"
    assert sum("power_cap" in t for t in texts) == 4
    spans = []
    for p in placed:
        x = p.t_s / 100.0 * axes_pt
        w = len(p.text) * CHAR_PT + 4.0
        left, right = (x - w, x) if p.right_aligned else (x, x + w)
        assert left >= -1 and right <= axes_pt + 1, p  # inside the plot's width
        spans.append((left, right, p.row))
    assert not _overlaps(spans)
    assert max(p.row for p in placed) >= 1  # close labels were stacked, not overlapped
    assert placed[-1].right_aligned  # near the right edge: it ends at its line


def test_plot_writes_a_png_with_a_panel_per_session(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _session(a)
    _session(b)
    png = tmp_path / "p.png"
    write_power_plot([(a, "a"), (b, "b")], png)
    with Image.open(png) as im:
        w, h = im.size
    assert w > 1000 and h > 2 * 300  # two panels, each with its label lane


def test_report_lists_marks_with_their_times(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from app.commands.report import analyse, print_reports

    path = tmp_path / "s.jsonl"
    _session(path)
    console = Console(file=io.StringIO(), width=140, record=True)
    print_reports([analyse(path)], console)
    lines = console.export_text().splitlines()
    assert "mark at t=20.1 s: m1" in lines and "mark at t=70.0 s: m2" in lines
