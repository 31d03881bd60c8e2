"""A warm start from a sweep (`--autopilot-prior`): the sweep's sessions read back as
points (setting, load, J/token, objective met or not), the autopilot going to the best
one that met the objective at the load of the run, and bad priors refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.autopilot.objective import AutopilotError, parse_objective
from app.core.autopilot.prior import read_prior
from app.core.events import AutopilotEvent, KnobEvent
from app.core.session_reader import read_session

ROOT = Path(__file__).resolve().parents[2]
# Between what 350 W and 700 W give sequential at 0.5/s on the twin (ttft p90 ~60 ms at
# 700 W, several times that at 350 W).
OBJECTIVE = "ttft_p90=91ms,tpot_p90=11ms"


def wattflow(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sweep")
    out = wattflow("sweep", "--fast", "--workload", "sequential", "--rate", "0.5",
                   "--duration", "420", "--grid", "power_cap=350,500,700",
                   "--grid", "batch_limit=16", "--dir", str(folder))
    assert out.returncode == 0, out.stderr
    return folder


def test_a_sweep_reads_back_as_points_per_setting(sweep_dir: Path) -> None:
    prior = read_prior([str(sweep_dir)], parse_objective(OBJECTIVE))
    caps = sorted(p.knobs["power_cap"] for p in prior.points)
    assert caps == [350.0, 500.0, 700.0]
    for p in prior.points:
        assert p.load == 0.5 and p.knobs["batch_limit"] == 16.0
        assert p.j_per_token > 0 and p.tokens_per_s > 0 and p.windows >= 5
    by_cap = {p.knobs["power_cap"]: p for p in prior.points}
    # Lower caps save energy; 350 W is too slow for this objective, 700 W meets it.
    assert by_cap[350.0].j_per_token < by_cap[700.0].j_per_token
    assert not by_cap[350.0].met and by_cap[700.0].met
    best, missed = prior.loads()[0.5]
    least = min(p.j_per_token for p in prior.points if p.met)
    assert best.met and best.j_per_token <= least * 1.02  # within the noise of the least
    assert by_cap[350.0] in missed
    # A looser objective: everything meets it, and the best is the least J/token.
    loose = read_prior([str(sweep_dir)], parse_objective("ttft_p90=60s,tpot_p90=1s"))
    assert all(p.met for p in loose.points)
    assert loose.loads()[0.5][0].knobs["power_cap"] == 350.0


def test_the_autopilot_starts_from_the_sweeps_best_setting(sweep_dir: Path,
                                                           tmp_path: Path) -> None:
    best = read_prior([str(sweep_dir)], parse_objective(OBJECTIVE)).loads()[0.5][0]
    session = tmp_path / "warm.jsonl"
    out = wattflow("run", "--headless", "--fast", "--workload", "sequential", "--rate", "0.5",
                   "--duration", "300", "--seed", "3", "--autopilot", OBJECTIVE,
                   "--autopilot-prior", str(sweep_dir), "--session", str(session))
    assert out.returncode == 0, out.stderr
    s = read_session(session)
    first = next(e for e in s.events if isinstance(e, AutopilotEvent))
    assert "warm start from 3 sweep sessions" in (first.reason or "")
    moves = [e for e in s.events if isinstance(e, KnobEvent) and e.source == "autopilot"]
    assert moves
    first_moves = {e.knob: e.value for e in moves if e.t_s == moves[0].t_s}
    # Straight to the sweep's best (its power cap and its batch limit) after the first
    # epoch, not a walk down 50 W at a time.
    assert first_moves == {"power_cap": best.knobs["power_cap"], "batch_limit": 16}
    assert "warm start" in (moves[0].reason or "") and moves[0].t_s < 90.0


def test_sessions_that_changed_their_knobs_mid_run_are_not_points(sweep_dir: Path,
                                                                    tmp_path: Path) -> None:
    changed = tmp_path / "changed.jsonl"
    out = wattflow("run", "--headless", "--fast", "--workload", "sequential", "--rate", "0.5",
                   "--duration", "300", "--at", "100:power_cap=400", "--session", str(changed))
    assert out.returncode == 0, out.stderr
    prior = read_prior([str(sweep_dir), str(changed)], parse_objective(OBJECTIVE))
    assert len(prior.points) == 3
    assert any("changed mid-run" in why for why in prior.skipped)
    with pytest.raises(AutopilotError, match="no static setting"):
        read_prior([str(changed)], parse_objective(OBJECTIVE))


def test_bad_priors_are_refused_in_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    junk = tmp_path / "junk.jsonl"
    junk.write_text(json.dumps({"not": "a session"}) + "\n")
    cases = [
        (["--autopilot-prior", str(tmp_path / "nowhere")], "no such file or directory"),
        (["--autopilot-prior", str(empty)], "no sessions"),
        (["--autopilot-prior", str(junk)], "autopilot prior"),
    ]
    for extra, words in cases:
        out = wattflow("run", "--headless", "--fast", "--workload", "sequential",
                       "--duration", "60", "--autopilot", OBJECTIVE, *extra,
                       "--session", str(tmp_path / "x.jsonl"))
        assert out.returncode != 0
        err = out.stderr.strip()
        assert words in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    out = wattflow("run", "--headless", "--fast", "--workload", "sequential", "--duration",
                   "60", "--autopilot-prior", str(empty))
    assert out.returncode != 0 and "needs --autopilot" in out.stderr
