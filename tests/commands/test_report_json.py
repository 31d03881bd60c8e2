"""`wattflow report --json` through the real CLI, checked against the schema that
docs/report-json.md documents: the test reads the key tables from that file, so the
document and the code cannot drift apart."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from app import cli
from app.commands import report
from app.core.events import (
    RUN_ENDED,
    EndEvent,
    EngineStateEvent,
    Event,
    KnobEvent,
    RequestEvent,
    Sample,
    SessionHeader,
    WorkflowEvent,
)
from app.core.session_writer import SessionRecorder
from tests.commands.test_report import build_session

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "report-json.md"
RECORDED = ROOT / "sessions" / "sample-interactive-transformers-h100-b8.jsonl"


# -- the documented schema ------------------------------------------------------------


def documented() -> dict[str, dict[str, str]]:
    """{section path: {key: type}} from the doc's `### \\`path\\`` headings and tables."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in DOC.read_text().splitlines():
        if line.startswith("### "):
            m = re.fullmatch(r"### `([^`]+)`", line)
            current = sections.setdefault(m.group(1) if m else line[4:].strip(), {})
        elif current is not None:
            m = re.match(r"\| `([a-z0-9_]+)` \| ([a-z ]+) \|", line)
            if m:
                current[m.group(1)] = m.group(2).strip()
    return sections


SCHEMA = documented()
# The section that describes each object, by where it sits in the document.
OBJECT_SECTION = {
    "": "Top level",
    "sessions[]": "sessions[]",
    "sessions[].knob_changes[]": "sessions[].knob_changes[]",
    "sessions[].knob_segments[]": "sessions[].knob_segments[]",
    "totals": "totals",
    "totals.window": "totals.window",
    "totals.drain": "totals.drain",
    "stages[]": "stages[]",
    "differences[]": "differences[]",
    "differences[].stages[]": "differences[].stages[]",
    "differences[].run": "differences[].stages[]",
    **{f"differences[].{row}.{figure}": "differences[] figure"
       for row in ("stages[]", "run")
       for figure in ("j_per_output_token", "tokens_per_s", "latency_p90_s", "energy_j")},
}


def _section(path: str) -> str:
    # a session's totals and stages have the shape of the top-level ones
    for alias in ("totals", "stages[]"):
        if path == f"sessions[].{alias}" or path.startswith(f"sessions[].{alias}."):
            path = path.removeprefix("sessions[].")
    return OBJECT_SECTION[path]


def _is(value: Any, base: str) -> bool:
    if base == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if base == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if base == "string":
        return isinstance(value, str)
    if base == "bool":
        return isinstance(value, bool)
    if base == "list":
        return isinstance(value, list)
    if base == "object":
        return isinstance(value, dict)
    if base == "map":
        return isinstance(value, dict) and all(
            isinstance(k, str) and (v is None or _is(v, "number")) for k, v in value.items())
    raise AssertionError(f"undocumented type {base!r}")


def check(obj: dict[str, Any], path: str = "") -> None:
    """Every documented key present with its type, no undocumented key; recurse."""
    keys = SCHEMA[_section(path)]
    assert set(obj) == set(keys), f"{path or 'top level'}: {set(obj) ^ set(keys)}"
    for key, typ in keys.items():
        value = obj[key]
        base, _, nullable = typ.partition(" or ")
        where = f"{path}.{key}".lstrip(".")
        if value is None:
            assert nullable == "null", f"{where} is null but documented as {typ}"
            continue
        assert _is(value, base), f"{where}: {value!r} is not {typ}"
        if base == "object":
            check(value, where)
        elif base == "list" and where in ("sessions", "stages", "sessions[].stages",
                                          "sessions[].knob_changes",
                                          "sessions[].knob_segments", "differences",
                                          "differences[].stages"):
            for item in value:
                check(item, f"{where}[]")
        elif base == "list":
            assert all(isinstance(x, str) for x in value), where  # notes, warnings


def test_the_doc_documents_every_object() -> None:
    for section in OBJECT_SECTION.values():
        assert SCHEMA.get(section), f"docs/report-json.md lacks a table for {section}"
    assert SCHEMA["totals"]["window"] == "object"
    assert SCHEMA["totals"]["drain"] == "object or null"


# -- a session with everything: a window and a drain, cut-off requests, shed workflows


def build_drained_session(path: Path) -> None:
    """12 s at 100 W GPU + 10 W CPU; the measured window ends at 8.5 s (drain event and
    end record). map: one request finished at 3 s (100 tokens, 300 J), one during the
    drain (80 tokens, 250 J). late: two requests cut off at 12 s (154 J together).
    Three workflow arrivals shed."""
    rec = SessionRecorder(path)
    rec.open(SessionHeader(t_s=0.0, name=path.stem, started_unix_s=1_700_000_000.0,
                           engine={"name": "sim", "model": "llama-8b"},
                           workload={"name": "interactive"}, knobs={"batch_limit": 8}))
    evs: list[Event] = []
    for t in range(13):
        evs.append(Sample(t_s=float(t), device="gpu0", component="gpu", energy_mj=1e5 * t,
                          power_w=100.0))
        evs.append(Sample(t_s=float(t), device="cpu0", component="cpu", energy_mj=1e4 * t))
    for t in range(9):
        evs.append(EngineStateEvent(t_s=float(t), source="client", output_tokens_total=20 * t))
    evs.append(EngineStateEvent(t_s=8.5, source="client", output_tokens_total=170,
                                note="drain: duration reached"))
    for rid, stage in (("m0", "map"), ("m1", "map"), ("l0", "late"), ("l1", "late")):
        evs.append(RequestEvent(t_s=1.0, request_id=rid, stage=stage, phase="submitted"))
    def done(t: float, rid: str, stage: str, phase: str, tokens: int, j: float,
             reason: str | None = None) -> RequestEvent:
        return RequestEvent(t_s=t, request_id=rid, stage=stage, phase=phase, latency_s=t - 1,
                            ttft_s=0.1, output_tokens=tokens, energy_j={"gpu": j}, reason=reason)

    evs += [
        done(3.0, "m0", "map", "finished", 100, 300.0, "stop"),
        done(9.5, "m1", "map", "finished", 80, 250.0, "stop"),
        done(12.0, "l0", "late", "failed", 10, 77.0, RUN_ENDED),
        done(12.0, "l1", "late", "failed", 10, 77.0, RUN_ENDED),
        KnobEvent(t_s=4.0, knob="batch_limit", value=16, previous=8, source="ui"),
    ]
    evs += [WorkflowEvent(t_s=2.0 + i, workflow_id=f"s{i}", phase="shed",
                          reason="2000 workflows waiting for admission") for i in range(3)]
    evs.sort(key=lambda e: e.t_s)
    for ev in evs:
        rec.write(ev)
    rec.close(EndEvent(t_s=12.0, summary={"window_end_s": 8.5, "drain_s": 3.5,
                                          "workflows_shed": 3}))


@pytest.fixture
def drained(tmp_path: Path) -> Path:
    path = tmp_path / "drained.jsonl"
    build_drained_session(path)
    return path


def cli_json(capsys: pytest.CaptureFixture[str], *paths: Path) -> dict[str, Any]:
    assert cli.main(["report", *map(str, paths), "--json"]) == 0
    out = capsys.readouterr().out
    doc = orjson.loads(out)
    assert isinstance(doc, dict)
    check(doc)
    return doc


def test_one_session_top_level_totals_are_the_sessions(
        drained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = cli_json(capsys, drained)
    assert doc["schema"] == report.JSON_SCHEMA == 1
    (s,) = doc["sessions"]
    assert doc["totals"] == s["totals"] and doc["stages"] == s["stages"]
    t = doc["totals"]
    assert t["duration_s"] == 12.0 and t["window_end_s"] == 8.5 and t["drain_s"] == 3.5
    assert t["output_tokens"] == 180 and t["cancelled_output_tokens"] == 20
    assert t["energy_total_j"] == pytest.approx(1320.0)
    assert t["j_per_output_token"] == pytest.approx(1320.0 / 180)
    assert t["cancelled_energy_j"] == pytest.approx(154.0)
    assert t["workflows_shed"] == 3
    assert t["shed_reasons"] == {"2000 workflows waiting for admission": 3}
    w, d = t["window"], t["drain"]
    assert (w["start_s"], w["end_s"], w["duration_s"]) == (0.0, 8.5, 8.5)
    assert w["energy_j"] == pytest.approx({"gpu": 850.0, "cpu": 85.0})
    assert (w["requests_finished"], w["output_tokens"]) == (1, 100)
    assert w["j_per_output_token"] == pytest.approx(9.35)
    assert w["generated_output_tokens"] == 170
    assert w["j_per_generated_token"] == pytest.approx(935.0 / 170)
    assert (d["start_s"], d["end_s"], d["duration_s"]) == (8.5, 12.0, 3.5)
    assert d["energy_total_j"] == pytest.approx(385.0)
    assert (d["requests_finished"], d["output_tokens"], d["requests_cancelled"]) == (1, 80, 2)
    stages = {x["stage"]: x for x in doc["stages"]}
    late = stages["late"]
    assert (late["count"], late["cancelled"], late["output_tokens"]) == (0, 2, 0)
    assert late["j_per_output_token"] is None and late["energy_j"] == 0.0
    assert late["cancelled_energy_j"] == pytest.approx(154.0)
    assert stages["map"]["j_per_output_token"] == pytest.approx(550.0 / 180)
    assert s["knob_changes"] == [{"t_s": 4.0, "knob": "batch_limit", "value": 16,
                                  "previous": 8, "source": "ui", "reason": None}]
    assert any("3 workflow arrivals shed" in n for n in s["notes"])


def test_a_recorded_session_from_before_the_window(capsys: pytest.CaptureFixture[str]) -> None:
    doc = cli_json(capsys, RECORDED)
    t = doc["totals"]
    assert t["window_end_s"] is None and t["drain_s"] is None and t["drain"] is None
    assert t["window"]["duration_s"] == t["duration_s"] > 0
    assert t["window"]["energy_total_j"] == pytest.approx(t["energy_total_j"])
    # 48 of its 60 requests were cut off: their tokens are not output tokens
    assert t["requests_cancelled"] == 48 and t["cancelled_output_tokens"] > 0
    assert t["output_tokens"] + t["cancelled_output_tokens"] == t["generated_output_tokens"]
    assert t["j_per_output_token"] == pytest.approx(t["energy_total_j"] / t["output_tokens"])
    assert report.NO_WINDOW_NOTE in doc["sessions"][0]["notes"]


def test_several_sessions_have_combined_totals_and_stages(
        drained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "old.jsonl"
    build_session(old)  # no window end, no client counter
    doc = cli_json(capsys, drained, old, RECORDED)
    sessions = [s["totals"] for s in doc["sessions"]]
    assert [s["session"] for s in doc["sessions"]] == ["drained.jsonl", "old.jsonl",
                                                        RECORDED.name]
    t = doc["totals"]
    for key in ("requests_finished", "requests_cancelled", "output_tokens", "workflows_shed"):
        assert t[key] == sum(s[key] for s in sessions), key
    assert t["energy_total_j"] == pytest.approx(sum(s["energy_total_j"] for s in sessions))
    assert t["j_per_output_token"] == pytest.approx(t["energy_total_j"] / t["output_tokens"])
    assert t["latency_p50_s"] is None and t["window_end_s"] is None
    assert t["drain"] is None  # two of the sessions have none
    assert t["window"]["generated_output_tokens"] is not None
    assert t["energy_j"]["gpu"] == pytest.approx(sum(s["energy_j"]["gpu"] for s in sessions))
    stages = {x["stage"]: x for x in doc["stages"]}
    assert set(stages) == {"map", "late", "reduce", "query"}
    assert stages["map"]["count"] == 2 + 4 and stages["map"]["latency_p50_s"] is None
    assert stages["map"]["energy_j"] == pytest.approx(550.0 + 880.0)


def test_two_drained_sessions_sum_their_drains(
        drained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.jsonl"
    build_drained_session(other)
    t = cli_json(capsys, drained, other)["totals"]
    assert t["drain_s"] == 7.0 and t["drain"]["energy_total_j"] == pytest.approx(770.0)
    assert t["window"]["j_per_output_token"] == pytest.approx(9.35)


def jq_examples() -> list[tuple[str, int, list[str]]]:
    """(where, how many sessions, jq's argv) of each `wattflow report ... --json | jq ...`
    line in the README and docs/report-json.md (continued lines joined)."""
    found = []
    for f in (ROOT / "README.md", DOC):
        text = f.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            if "wattflow report" not in line or "--json | jq" not in line:
                continue
            left, _, right = line.partition("| jq")
            sessions = [w for w in left.split() if w.endswith(".jsonl")]
            found.append((f"{f.name}: {line.strip()}", len(sessions),
                          ["jq", *shlex.split(right, comments=True)]))
    return found


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
@pytest.mark.parametrize("where,n,argv", jq_examples(), ids=lambda x: str(x)[:60])
def test_readme_jq_examples_work_as_written(
        where: str, n: int, argv: list[str], drained: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    doc = cli_json(capsys, *[drained] * n)
    out = subprocess.run(argv, input=orjson.dumps(doc), capture_output=True, check=False)
    assert out.returncode == 0, f"{where}: {out.stderr.decode()}"
    text = out.stdout.decode().strip()
    assert text and "null" not in text.split(), f"{where} printed {text!r}"


def test_there_are_readme_jq_examples() -> None:
    examples = jq_examples()
    assert any(w.startswith("README.md") and argv == ["jq", ".totals"]
               for w, _, argv in examples)
    assert sum(w.startswith("README.md") for w, _, _ in examples) >= 3
