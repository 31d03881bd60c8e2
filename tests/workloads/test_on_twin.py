"""Each workload runs headless on the simulated twin, and its session shows the DAG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.core.session_reader import read_session

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("workload", "params", "tag", "edge"),
    # tag: the workload tag of the workflows whose DAG is checked
    [
        ("sequential", ["variant=chain", "chunks=4"], "sequential",
         ("summarize_1", ["summarize_0"])),
        ("sequential", ["variant=mapreduce", "chunks=4"], "sequential",
         ("reduce", ["map_0", "map_1", "map_2", "map_3"])),
        ("interactive", ["followup_prob=0.9"], "interactive", ("turn_1", ["turn_0"])),
        ("agentic", ["agents=4", "rounds=2"], "agentic",
         ("engineer_2_0", ["revise_1_0", "revise_1_1", "revise_1_2", "revise_1_3"])),
        ("composite", ["sequential_rate=0.3", "agentic_rate=0.1"], "agentic",
         ("review_1_0", ["engineer_1_0"])),
        ("workloads/examples/code-review.toml", [], "codereview",
         ("revise_0", ["engineer_0", "review_0"])),
    ],
)
def test_workload_runs_headless_on_the_twin_and_records_its_dag(
        workload: str, params: list[str], tag: str, edge: tuple[str, list[str]],
        tmp_path: Path) -> None:
    session = tmp_path / "s.jsonl"
    args = [sys.executable, "-m", "app", "run", "--headless", "--fast", "--engine", "sim",
            "--workload", workload, "--duration", "120", "--session", str(session)]
    for p in params:
        args += ["-p", p]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # Whole records: version-2 lines leave out what the reader restores.
    data = read_session(session)
    assert data.end is not None
    lines = [data.header.to_dict(), *(e.to_dict() for e in data.events), data.end.to_dict()]
    assert lines[0]["kind"] == "session" and lines[-1]["kind"] == "end"
    assert lines[0]["workload"]["name"] in (workload, tag)
    workflows = {e["workflow_id"]: e["workload"] for e in lines if e["kind"] == "workflow"}
    assert tag in workflows.values()
    declared = [e for e in lines if e["kind"] == "stage" and e["phase"] == "declared"
                and workflows.get(e["workflow_id"]) == tag]
    node, deps = edge
    assert any(e["node"] == node and e["deps"] == deps for e in declared)
    finished = [e for e in lines if e["kind"] == "request" and e["phase"] == "finished"]
    assert finished and all(e["output_tokens"] > 0 for e in finished)
    assert lines[-1]["summary"]["output_tokens"] > 0
