"""`wattflow calibrate`: fit the twin to sessions recorded on a real GPU (issue 10)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from app.core.clock import ManualClock
from engines.base import EngineContext
from engines.sim.engine import SimEngine
from engines.sim.profile import load_profile

ROOT = Path(__file__).resolve().parents[2]
B8 = ROOT / "sessions" / "sample-interactive-transformers-h100-b8.jsonl"
B64 = ROOT / "sessions" / "sample-interactive-transformers-h100-b64.jsonl"


def _rewrite(src: Path, dst: Path, keep: object = None, header: object = None) -> Path:
    lines = []
    for i, line in enumerate(src.read_text().splitlines()):
        ev = json.loads(line)
        if i == 0 and callable(header):
            header(ev)
        if callable(keep) and not keep(ev):
            continue
        lines.append(json.dumps(ev))
    dst.write_text("\n".join(lines) + "\n")
    return dst


def _add_line(src: Path, dst: Path, event: dict[str, object]) -> Path:
    lines = src.read_text().splitlines()
    lines.insert(5, json.dumps(event))
    dst.write_text("\n".join(lines) + "\n")
    return dst


def test_fits_a_session_and_writes_a_profile_the_sim_engine_uses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "h100.json"
    code = main(["calibrate", str(B64), "--check", str(B8), "--out", str(out),
                 "--max-evals", "40"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "llama-1b on NVIDIA H100 80GB HBM3;" in text
    # One row per session and metric, with errors before and after.
    for metric in ("output tok/s", "GPU power W", "J/token", "TPOT p50 s", "TTFT p50 s"):
        assert f"| {B64.name} | fitted | {metric} |" in text
        assert f"| {B8.name} | check | {metric} |" in text
    profile = load_profile(out)
    assert profile.model == "llama-1b" and profile.gpu == "h100"
    errs = profile.fit["errors"][B64.name]
    assert errs["role"] == "fitted" and profile.fit["checked"] == [B8.name]
    # The transformers engine is ~40x slower per step than vLLM's H100 fit: the fitted
    # twin must be much closer to the session it was fitted to than the default twin.
    assert abs(errs["tpot_p50_s"]) < 0.3 and abs(errs["tokens_per_s"]) < 0.3
    assert profile.calibration.overhead_s > 10 * 1.53e-3
    engine = SimEngine.from_options(EngineContext(clock=ManualClock(), emit=lambda _e: None),
                                    {"profile": str(out)})
    assert engine.info().model == "llama-1b"
    assert engine.twin.calibration == profile.calibration
    assert "profile: " in text and str(out) in text


@pytest.mark.parametrize(("make", "needle"), [
    (lambda d: d / "missing.jsonl", "missing.jsonl"),
    (lambda d: (d / "junk.jsonl").write_text("not json\n") and d / "junk.jsonl",
     "junk.jsonl"),
    # A session without GPU meters: nothing to fit power to.
    (lambda d: _rewrite(B8, d / "nogpu.jsonl", keep=lambda e: e["kind"] != "sample",
                        header=lambda h: h.update(meters=[])), "no GPU meter"),
    # A session of the twin itself.
    (lambda d: _rewrite(B8, d / "sim.jsonl", header=lambda h: (
        h.update(clock="virtual"), h["engine"].update(name="sim"))), "simulated twin"),
    # A model the table does not know.
    (lambda d: _rewrite(B8, d / "odd.jsonl", header=lambda h: h["engine"].update(
        model="mystery-7b")), "model 'mystery-7b' is not in the twin's table"),
    # The operator turned a knob mid-run: the replay could not follow.
    (lambda d: _add_line(B8, d / "knob.jsonl", {
        "kind": "knob", "t_s": 30.0, "knob": "power_cap", "value": 400.0,
        "previous": 700.0, "source": "ui", "requested": 400.0}),
     "changes power_cap mid-run (at 30 s)"),
    # Too little to fit: no request got a token.
    (lambda d: _rewrite(B8, d / "empty.jsonl", keep=lambda e: e["kind"] != "request"),
     "too few to fit"),
])
def test_unsuitable_sessions_are_one_line_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object,
        needle: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    code = main(["calibrate", str(path), "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "p.json").exists()


def test_mixed_models_and_an_existing_profile_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = _rewrite(B8, tmp_path / "qwen.jsonl",
                     header=lambda h: h["engine"].update(model="qwen3-8b"))
    assert main(["calibrate", str(B8), str(other), "--out", str(tmp_path / "p.json")]) == 2
    assert "different GPUs or models" in capsys.readouterr().err
    existing = tmp_path / "keep.json"
    existing.write_text("precious")
    assert main(["calibrate", str(B8), "--out", str(existing)]) == 2
    assert "already exists (--force overwrites it)" in capsys.readouterr().err
    assert existing.read_text() == "precious"
