"""Length distributions (workloads/lengths.py): their draws, their written and TOML
forms and errors, and their use by the built-in workloads and TOML workflows."""

from __future__ import annotations

import math
import random
import statistics
from pathlib import Path

import pytest

import workloads
from tests.workloads.runs import dag_of, run_fake
from workloads.lengths import (
    Empirical,
    Exponential,
    Fixed,
    LengthError,
    LogNormal,
    Uniform,
    parse_length,
)
from workloads.params import MAX_TOKENS
from workloads.toml_workflow import load_toml_workload

N = 20_000


def _draws(text: object, n: int = N, seed: int = 1) -> list[int]:
    d = parse_length(text, "x")
    r = random.Random(seed)
    return [d.sample(r) for _ in range(n)]


def test_fixed_draws_nothing_from_the_generator() -> None:
    r = random.Random(3)
    state = r.getstate()
    assert [parse_length("fixed:256", "x").sample(r) for _ in range(5)] == [256] * 5
    assert parse_length(256, "x") == parse_length("256", "x") == Fixed(256)
    assert r.getstate() == state


def test_uniform_is_randint_draw_for_draw() -> None:
    a, b = random.Random(5), random.Random(5)
    d = parse_length("uniform:100-800", "x")
    assert d == Uniform(100, 800) == parse_length("uniform:min=100,max=800", "x")
    assert [d.sample(a) for _ in range(100)] == [b.randint(100, 800) for _ in range(100)]
    xs = _draws("uniform:100-800")
    assert min(xs) == 100 and max(xs) == 800
    assert statistics.fmean(xs) == pytest.approx(450, rel=0.02)
    assert statistics.pstdev(xs) == pytest.approx(701 / math.sqrt(12), rel=0.03)


def test_exponential_mean_and_spread() -> None:
    xs = _draws("exp:200")
    assert statistics.fmean(xs) == pytest.approx(200, rel=0.03)
    assert statistics.pstdev(xs) == pytest.approx(200, rel=0.05)  # sd = mean
    assert min(xs) >= 1


def test_lognormal_mean_and_spread() -> None:
    xs = _draws("lognormal:mean=300,spread=0.8")
    assert statistics.fmean(xs) == pytest.approx(300, rel=0.03)
    logs = [math.log(x) for x in xs]
    assert statistics.pstdev(logs) == pytest.approx(0.8, rel=0.03)
    assert statistics.median(xs) == pytest.approx(300 * math.exp(-0.32), rel=0.04)


def test_lognormal_by_coefficient_of_variation() -> None:
    d = parse_length("lognormal:mean=300,cv=1", "x")
    assert isinstance(d, LogNormal)
    assert d.spread == pytest.approx(math.sqrt(math.log(2)))
    xs = _draws(d)
    assert statistics.fmean(xs) == pytest.approx(300, rel=0.04)
    assert statistics.pstdev(xs) / statistics.fmean(xs) == pytest.approx(1.0, rel=0.1)


def test_empirical_list_samples_each_value_alike(tmp_path: Path) -> None:
    xs = _draws("list:100,200,300", n=30_000)
    assert set(xs) == {100, 200, 300}
    for v in (100, 200, 300):
        assert xs.count(v) / len(xs) == pytest.approx(1 / 3, abs=0.015)
    f = tmp_path / "lens.txt"
    f.write_text("# observed lengths\n100, 200\n300\n")
    assert parse_length(f"file:{f}", "x") == Empirical((100, 200, 300))
    assert parse_length({"dist": "list", "file": "lens.txt"}, "x", base_dir=tmp_path) == \
        Empirical((100, 200, 300))


def test_clipping_to_min_and_max() -> None:
    xs = _draws("lognormal:mean=300,spread=1.5,min=50,max=1000")
    assert min(xs) == 50 and max(xs) == 1000
    ys = _draws("exp:mean=200,max=250")
    assert max(ys) == 250 and min(ys) >= 1
    assert all(1 <= x <= MAX_TOKENS for x in _draws("lognormal:mean=900000,spread=3",
                                                    n=2000))
    assert parse_length("exp:5", "x", floor=0).sample(random.Random(0)) >= 0


def test_draws_are_deterministic_for_a_seed() -> None:
    for text in ("exp:200", "lognormal:300,0.8", "list:1,2,3", "uniform:1-9"):
        assert _draws(text, 500, seed=9) == _draws(text, 500, seed=9)
        assert _draws(text, 500, seed=9) != _draws(text, 500, seed=10)


def test_text_and_table_forms_agree() -> None:
    assert parse_length("exp:200", "x") == parse_length("exponential:mean=200", "x") == \
        parse_length({"dist": "exp", "mean": 200}, "x") == Exponential(200, 1, MAX_TOKENS)
    assert parse_length("lognormal:300,0.8", "x") == parse_length(
        {"dist": "lognormal", "mean": 300, "spread": 0.8}, "x")
    assert parse_length({"dist": "lognormal", "mean": 300, "spread": 0.8, "max": 4000},
                        "x") == LogNormal(300, 0.8, 1, 4000)
    assert parse_length({"dist": "fixed", "value": 7}, "x") == Fixed(7)
    assert parse_length({"dist": "list", "values": [3, 4]}, "x") == Empirical((3, 4))


@pytest.mark.parametrize(("value", "needle"), [
    ("lognormal:mean=nan,spread=1", "mean must be a finite number, got nan"),
    ("exp:inf", "mean must be a finite number, got inf"),
    ("exp:-3", "mean = -3 is out of range"),
    ("fixed:0", "value = 0 is out of range (1-1000000)"),
    (-5, "= -5 is out of range (1-1000000)"),
    ("uniform:1-2000000", "max = 2000000 is out of range"),
    ("uniform:9-3", "max 3 is below min 9"),
    ("uniform:9", "uniform is uniform:LO-HI"),
    ("lognormal:mean=300", "exactly one of spread"),
    ("lognormal:mean=300,spread=9", "spread = 9 is out of range"),
    ("lognormal:mean=300,spread=0.5,sigma=2", "lognormal has no 'sigma'"),
    ("gamma:3", "unknown distribution 'gamma'"),
    ("many", "'many' is not a length"),
    ("list:", "list has no values"),
    ("list:1,x", "list value must be a number"),
    ("fixed:2.5", "value must be a whole number"),
    ("file:/no/such/file", "no such file"),
    ({"mean": 3}, "needs dist ="),
    ({"dist": "exp"}, "exp needs mean"),
    (True, "must be a whole number or a distribution"),
])
def test_errors_are_one_line_naming_the_parameter(value: object, needle: str) -> None:
    with pytest.raises(LengthError) as info:
        parse_length(value, "sequential: parameter output_tokens")
    msg = str(info.value)
    assert msg.startswith("sequential: parameter output_tokens")
    assert needle in msg
    assert "\n" not in msg


# -- in the workloads ----------------------------------------------------------------------
def _max_tokens(workload: workloads.Workload, stage: str, n: int = 40) -> list[int]:
    out: list[int] = []
    for i in range(n):
        _, dag = dag_of(workload, index=i, seed=3)
        out += [r.max_tokens for r in dag.requests if r.node.startswith(stage)]
    return out


def test_sequential_output_tokens_follow_a_lognormal() -> None:
    w = workloads.create("sequential", {"variant": "mapreduce", "chunks": 50,
                                        "chunk_tokens": 20,
                                        "output_tokens": "lognormal:mean=300,spread=0.8"})
    xs = _max_tokens(w, "map_", n=40)
    assert len(xs) == 2000
    assert statistics.fmean(xs) == pytest.approx(300, rel=0.06)
    assert statistics.pstdev([math.log(x) for x in xs]) == pytest.approx(0.8, rel=0.06)


def test_a_run_with_a_distribution_records_its_max_tokens() -> None:
    run = run_fake("sequential", {"chunks": 30, "chunk_tokens": 10,
                                  "output_tokens": "list:3,7"}, workflows=2)
    got = {e.max_tokens for e in run.requests("submitted")}
    assert got == {3, 7}


def test_interactive_output_tokens_replace_the_min_max_pair() -> None:
    w = workloads.create("interactive", {"output_tokens": "exp:mean=100,max=300",
                                         "snippet_tokens": 10, "question_tokens": "fixed:5"})
    xs = _max_tokens(w, "turn_", n=300)
    assert max(xs) <= 300 and statistics.fmean(xs) == pytest.approx(100 * (1 - math.exp(-3)),
                                                                  rel=0.12)
    _, dag = dag_of(w)
    assert dag.requests[0].prompt_tokens < 3000  # 10 snippet tokens, not 3150-4500


def test_interactive_min_max_pairs_still_mean_uniform() -> None:
    a = workloads.create("interactive", {"output_tokens_min": 10, "output_tokens_max": 20})
    b = workloads.create("interactive", {"output_tokens_min": 10, "output_tokens_max": 20,
                                         "output_tokens": None})
    xs = _max_tokens(a, "turn_", n=50)
    assert set(xs) <= set(range(10, 21)) and len(set(xs)) > 5
    assert xs == _max_tokens(b, "turn_", n=50)


def test_agentic_and_composite_take_distributions() -> None:
    w = workloads.create("agentic", {"agents": 2, "rounds": 2, "engineer_tokens": "list:11,13",
                                     "task_tokens": "uniform:0-5"})
    _, dag = dag_of(w)
    assert {r.max_tokens for r in dag.requests if r.node.startswith("engineer")} <= {11, 13}
    c = workloads.create("composite", {"sequential.output_tokens": "exp:40",
                                       "interactive.output_tokens": "fixed:17"})
    assert c.params()["interactive.output_tokens"] == "fixed:17"


@pytest.mark.parametrize(("name", "params", "needle"), [
    ("sequential", {"output_tokens": "lognormal:mean=300"},
     "sequential: parameter output_tokens: lognormal needs exactly one of spread"),
    ("interactive", {"output_tokens": "exp:nan"},
     "interactive: parameter output_tokens: mean must be a finite number, got nan"),
    ("agentic", {"review_tokens": "uniform:0-3"},
     "agentic: parameter review_tokens: min = 0 is out of range (1-1000000)"),
    ("composite", {"agentic.engineer_tokens": "gamma:2"},
     "composite: agentic: parameter engineer_tokens: unknown distribution 'gamma'"),
])
def test_workload_parameter_errors_name_the_parameter(name: str, params: dict[str, object],
                                                      needle: str) -> None:
    with pytest.raises(workloads.WorkloadError) as info:
        workloads.create(name, params)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


# -- in TOML workflows ---------------------------------------------------------------------
TOML = """
name = "lens"
[params]
answer = { dist = "lognormal", mean = 300, spread = 0.8, max = 4000 }
[[stage]]
name = "ask"
copies = 50
prompt = "Question: {passage:$answer}"
output_tokens = "$answer"
[[stage]]
name = "sum"
after = ["ask"]
prompt = "{parents}"
output_tokens = { dist = "list", values = [5, 9] }
"""


def test_toml_distribution_tables(tmp_path: Path) -> None:
    f = tmp_path / "lens.toml"
    f.write_text(TOML)
    w = load_toml_workload(str(f))
    xs: list[int] = []
    for i in range(30):
        _, dag = dag_of(w, index=i)
        xs += [r.max_tokens for r in dag.requests if r.node.startswith("ask")]
        assert dag.requests[-1].max_tokens in (5, 9)
    assert max(xs) <= 4000
    assert statistics.fmean(xs) == pytest.approx(300, rel=0.08)
    # -p overrides a distribution parameter with a written form
    w2 = load_toml_workload(str(f), {"answer": "uniform:5-10"})
    _, dag = dag_of(w2)
    assert {r.max_tokens for r in dag.requests if r.node.startswith("ask")} <= set(range(5, 11))


def test_toml_output_tokens_in_written_form_and_old_forms(tmp_path: Path) -> None:
    f = tmp_path / "w.toml"
    f.write_text('[[stage]]\nname = "a"\nfanout = 40\nprompt = "x"\n'
                 'output_tokens = "exp:mean=50,max=60"\n'
                 '[[stage]]\nname = "b"\nprompt = "x"\noutput_tokens = [7, 7]\n')
    _, dag = dag_of(load_toml_workload(str(f)))
    a = [r.max_tokens for r in dag.requests if r.node == "a"]
    assert max(a) <= 60 and len(set(a)) > 5
    assert [r.max_tokens for r in dag.requests if r.node == "b"] == [7]


@pytest.mark.parametrize(("field", "needle"), [
    ('{ dist = "lognormal", mean = 300 }', "stage 'a'.output_tokens: lognormal needs exactly"),
    ('{ dist = "exp", mean = nan }', "stage 'a'.output_tokens: mean must be a finite number"),
    ('{ dist = "uniform", min = 5, max = 2 }', "stage 'a'.output_tokens: max 2 is below min 5"),
    ('"lognormal:mean=-1,spread=1"', "stage 'a'.output_tokens: mean = -1 is out of range"),
    ('{ dist = "list", file = "missing.txt" }', "stage 'a'.output_tokens: list file"),
])
def test_toml_distribution_errors_are_one_line(tmp_path: Path, field: str, needle: str) -> None:
    f = tmp_path / "w.toml"
    f.write_text(f'[[stage]]\nname = "a"\nprompt = "x"\noutput_tokens = {field}\n')
    with pytest.raises(workloads.WorkloadError) as info:
        load_toml_workload(str(f))
    assert needle in str(info.value)
    assert str(info.value).startswith(str(f))
    assert "\n" not in str(info.value)
