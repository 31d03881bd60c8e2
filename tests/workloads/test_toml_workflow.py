"""User-defined TOML workflows: the examples, the re-creation of a built-in workload,
and one-line errors that name the file and the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import workloads
from engines.base import Request
from tests.workloads.runs import dag_of, run_fake
from workloads.toml_workflow import load_toml_workload

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "workloads" / "examples"


def _normal(requests: list[Request], wid: str) -> list[tuple[Any, ...]]:
    """A request as the engine sees it, with the workflow id taken out (the built-in
    names its workflows seq<n>, a file <name><n>)."""
    def strip(x: str) -> str:
        return x.replace(wid, "W")

    return [(strip(r.request_id), r.node, r.stage, [strip(p) for p in r.parents], r.prompt,
             r.prompt_tokens, r.max_tokens, r.prefix_key, r.prefix_tokens) for r in requests]


@pytest.mark.parametrize(
    ("example", "params"),
    [
        ("sequential-chain.toml", {"variant": "chain"}),
        ("sequential-chain.toml", {"variant": "chain", "chunks": 3, "chunk_tokens": 512,
                                   "output_tokens": 25}),
        ("sequential-mapreduce.toml", {"variant": "mapreduce"}),
        ("sequential-mapreduce.toml", {"variant": "mapreduce", "chunks": 15,
                                       "chunk_tokens": 1000, "reduce_tokens": 100}),
    ],
)
@pytest.mark.parametrize(("index", "seed"), [(0, 0), (3, 11)])
def test_toml_recreation_issues_the_same_requests_as_the_builtin(
        example: str, params: dict[str, Any], index: int, seed: int) -> None:
    builtin = workloads.create("sequential", params)
    file_params = {k: v for k, v in params.items() if k != "variant"}
    recreated = workloads.create(str(EXAMPLES / example), file_params)
    b_spec, b = dag_of(builtin, index, seed)
    t_spec, t = dag_of(recreated, index, seed)
    assert t_spec.workload == b_spec.workload == "sequential"
    assert t.declared == b.declared
    assert _normal(t.requests, t_spec.workflow_id) == _normal(b.requests, b_spec.workflow_id)
    assert builtin.arrival() == recreated.arrival()
    # and it is not trivially equal: another seed gives other prompts
    _, other = dag_of(recreated, index, seed + 1)
    assert [r.prompt for r in other.requests] != [r.prompt for r in t.requests]


def test_examples_run_on_the_runner() -> None:
    for example in sorted(EXAMPLES.glob("*.toml")):
        run = run_fake(str(example), {}, workflows=2, max_tokens=5, rate=10.0)
        assert len(run.workflows("finished")) == 2, example.name
        declared = run.stages("declared")
        assert declared and all(e.calls >= 1 for e in declared)


def test_copilot_example_shares_the_system_prompt_and_keeps_history() -> None:
    w = workloads.create(str(EXAMPLES / "copilot.toml"), {"followup": 1.0})
    _, dag = dag_of(w)
    query, f1, f2 = dag.requests
    assert query.prefix_key == "shared.system" and query.prefix_tokens == 2330
    assert 5500 <= query.prompt_tokens <= 6900
    assert f1.prompt.startswith(query.prompt)
    assert f1.prefix_key is not None and f1.prefix_tokens > query.prompt_tokens
    assert f2.prompt.startswith(f1.prompt)
    assert [r.stage for r in dag.requests] == ["query", "followup", "followup"]
    never = workloads.create(str(EXAMPLES / "copilot.toml"), {"followup": 0.0})
    assert [r.stage for r in dag_of(never)[1].requests] == ["query"]


def test_code_review_example_pairs_each_file_with_its_review() -> None:
    w = workloads.create(str(EXAMPLES / "code-review.toml"), {"agents": 3})
    _spec, dag = dag_of(w)
    deps = {node: d for node, _, d, _ in dag.declared}
    assert deps["engineer_1"] == ("architect",)
    assert deps["review_1"] == ("engineer_1",)
    assert deps["revise_2"] == ("engineer_2", "review_2")
    revise = next(r for r in dag.requests if r.node == "revise_2")
    assert "engineer_2-w0" in revise.prompt and "review_2-w0" in revise.prompt
    assert "engineer_1-w0" not in revise.prompt


def test_fanout_copies_and_ranges() -> None:
    text = """
[[stage]]
name = "ask"
fanout = 3
prompt = "Question {call}: {passage:10..20}"
output_tokens = [5, 9]

[[stage]]
name = "judge"
after = "ask"
prompt = "Pick the best: {parents}"
output_tokens = 4
"""
    w = _load(text)
    _spec, dag = dag_of(w)
    assert [(n, d, c) for n, _, d, c in dag.declared] == [("ask", (), 3), ("judge", ("ask",), 1)]
    asks = [r for r in dag.requests if r.node == "ask"]
    assert len(asks) == 3 and {r.prompt.split(":")[0] for r in asks} == {
        "Question 0", "Question 1", "Question 2"}
    assert all(5 <= r.max_tokens <= 9 for r in asks)
    (judge,) = [r for r in dag.requests if r.node == "judge"]
    assert judge.prompt_tokens == 4 + sum(r.max_tokens for r in asks)  # "Pick the best: " + 3 answers


_FILE: dict[str, Path] = {}


def _load(text: str, params: dict[str, Any] | None = None) -> workloads.Workload:
    path = _FILE["dir"] / "wf.toml"
    path.write_text(text)
    return load_toml_workload(str(path), params or {})


@pytest.fixture(autouse=True)
def _tmp(tmp_path: Path) -> None:
    _FILE["dir"] = tmp_path


GOOD_STAGE = '[[stage]]\nname = "a"\nprompt = "hi {passage:10}"\noutput_tokens = 5\n'


@pytest.mark.parametrize(
    ("text", "params", "needles"),
    [
        ("[[stage]\nname = 1", {}, ["not valid TOML", "line 1"]),
        ('colour = "blue"\n' + GOOD_STAGE, {}, ["colour: unknown field"]),
        (GOOD_STAGE + "fanot = 3\n", {}, ["stage 'a'.fanot: unknown field"]),
        (GOOD_STAGE.replace('"a"', '"b"') + GOOD_STAGE.replace('name = "a"',
         'name = "c"\nafter = ["b"]') + '[[stage]]\nname = "b2"\nprompt = "x"\noutput_tokens = 1\n',
         {}, []),  # a valid file: checked to load below
        ('[[stage]]\nname = "a"\nafter = ["b"]\nprompt = "x"\noutput_tokens = 1\n'
         '[[stage]]\nname = "b"\nafter = ["a"]\nprompt = "x"\noutput_tokens = 1\n', {},
         [".after: dependency cycle: a -> b -> a"]),
        ('[[stage]]\nname = "a"\nafter = ["a"]\nprompt = "x"\noutput_tokens = 1\n', {},
         ["stage 'a'.after: dependency cycle"]),
        (GOOD_STAGE + 'after = ["mapp"]\n', {}, ["stage 'a'.after: no stage named 'mapp'"]),
        (GOOD_STAGE.replace("output_tokens = 5", "output_tokens = -5"), {},
         ["stage 'a': output_tokens = -5 is out of range (1-1000000)"]),
        (GOOD_STAGE.replace("{passage:10}", "{passage:-10}"), {},
         ["stage 'a': prompt {passage:-10} = -10 is out of range (1-1000000)"]),
        (GOOD_STAGE.replace("output_tokens = 5", "output_tokens = [9, 3]"), {},
         ["stage 'a'.output_tokens: range [min, max] has max 3 below min 9"]),
        (GOOD_STAGE + "delay_s = -1\n", {}, ["stage 'a': delay_s = -1 is out of range (0-86400)"]),
        (GOOD_STAGE.replace("{passage:10}", "{chunk}"), {}, ["stage 'a'.prompt {chunk}: unknown"]),
        (GOOD_STAGE.replace("{passage:10}", "{parent:z}"), {},
         ["stage 'a'.prompt {parent:z}: 'z' is not in this stage's after list"]),
        (GOOD_STAGE.replace("hi {passage:10}", "a } b"), {}, ["stage 'a'.prompt: unmatched '}'"]),
        (GOOD_STAGE.replace("output_tokens = 5", 'output_tokens = "$n"'), {},
         ["stage 'a'.output_tokens: unknown parameter $n"]),
        ("[params]\nn = 4\n" + GOOD_STAGE, {"m": 3}, ["parameter 'm' is not in the file's [params]"]),
        ("[params]\nn = 4\n" + GOOD_STAGE, {"n": "x"}, ["parameter n: expected a whole number (like its default 4), got 'x'"]),
        ("[arrival]\nrate = 0\n" + GOOD_STAGE, {}, ["arrival: rate = 0 is out of range (more than 0, up to 10000)"]),
        ('[[stage]]\nprompt = "x"\noutput_tokens = 1\n', {}, ["stage[0].name: missing"]),
        ('[[stage]]\nname = "a"\noutput_tokens = 1\n', {}, ["stage 'a'.prompt: missing"]),
        ('name = "x"\n', {}, ["stage: no [[stage]] tables"]),
        (GOOD_STAGE + GOOD_STAGE, {}, ["stage 'a'.name: two stages have this name"]),
        (GOOD_STAGE + "copies = 2\n" + GOOD_STAGE.replace('"a"', '"b"')
         + 'copies = 3\nper_copy = true\nafter = ["a"]\n', {},
         ["stage 'b'.per_copy: 3 copies but stage 'a' has 2"]),
        (GOOD_STAGE.replace("{passage:10}", "{shared:sys}"), {},
         ["stage 'a'.prompt {shared:sys}: no [shared.sys] table"]),
    ],
)
def test_bad_files_are_one_line_errors_naming_file_and_field(
        text: str, params: dict[str, Any], needles: list[str]) -> None:
    if not needles:
        _load(text, params)
        return
    with pytest.raises(workloads.WorkloadError) as info:
        _load(text, params)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(_FILE["dir"] / "wf.toml") + ": ")
    for needle in needles:
        assert needle in msg


def test_missing_file_is_one_line() -> None:
    with pytest.raises(workloads.WorkloadError, match=r"nope\.toml: no such file"):
        workloads.create(str(_FILE["dir"] / "nope.toml"))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("stage = [[[", "not valid TOML"),
        (GOOD_STAGE.replace("output_tokens = 5", "output_tokens = -5"),
         "stage 'a': output_tokens = -5 is out of range (1-1000000)"),
    ],
)
def test_cli_exits_2_with_one_line_naming_the_file(text: str, needle: str,
                                                   tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    out = subprocess.run(
        [sys.executable, "-m", "app", "run", "--workload", str(bad), "--headless", "--fast",
         "--engine", "sim", "--workflows", "1", "--session", str(tmp_path / "s.jsonl")],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert str(bad) in lines[0] and needle in lines[0]
    assert not (tmp_path / "s.jsonl").exists()
