"""The shape of each workload's traffic, run through the Runner on the fake engine in
virtual time: what waits for what, what runs together, and how often work arrives."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

import workloads
from tests.workloads.runs import dag_of, run_fake
from workloads.composite import CompositeWorkload
from workloads.interactive import system_prompt


def test_chain_issues_n_calls_strictly_one_after_another() -> None:
    n = 6
    run = run_fake("sequential", {"variant": "chain", "chunks": n, "chunk_tokens": 512,
                                  "output_tokens": 25})
    sub = sorted(run.requests("submitted"), key=lambda e: e.t_s)
    fin = run.by_node("finished")
    assert [e.node for e in sub] == [f"summarize_{k}" for k in range(n)]
    for prev, nxt in itertools.pairwise(sub):
        assert nxt.t_s >= fin[(prev.workflow_id, prev.node)].t_s
        assert nxt.parents == [prev.request_id]
    # never two at once, though the batch limit (64) would allow it
    assert run.runner._engine.max_in_flight == 1  # type: ignore[union-attr]
    # each step's prompt carries the previous summary
    assert [e.prompt_tokens for e in sub[1:]] == [sub[1].prompt_tokens] * (n - 1)
    assert sub[1].prompt_tokens == sub[0].prompt_tokens + 25


def test_mapreduce_issues_n_parallel_calls_and_reduces_after_all() -> None:
    n = 7
    run = run_fake("sequential", {"variant": "mapreduce", "chunks": n, "chunk_tokens": 512,
                                  "output_tokens": 25, "reduce_tokens": 30})
    sub = run.requests("submitted")
    maps = [e for e in sub if e.stage == "map"]
    (reduce,) = [e for e in sub if e.stage == "reduce"]
    assert len(maps) == n
    assert len({e.t_s for e in maps}) == 1  # all submitted at the same instant
    assert run.runner._engine.max_in_flight == n  # type: ignore[union-attr]
    fin = run.by_node("finished")
    assert reduce.t_s >= max(fin[(e.workflow_id, e.node)].t_s for e in maps)
    assert sorted(reduce.parents) == sorted(e.request_id for e in maps)
    assert reduce.prompt_tokens > n * 25  # it reads every summary


def test_agentic_rounds_keep_order_and_per_round_parallelism() -> None:
    agents, rounds = 3, 3
    run = run_fake("agentic", {"agents": agents, "rounds": rounds, "brief_tokens": 200,
                               "architect_tokens": 8, "engineer_tokens": 6,
                               "review_tokens": 4, "revise_tokens": 5},
                   batch_limit=64)
    sub, fin = run.by_node("submitted"), run.by_node("finished")
    wid = "agent0"
    assert len(sub) == 1 + 3 * agents * rounds
    prev_done = fin[(wid, "architect")].t_s
    eng_prompt = []
    for rd in range(1, rounds + 1):
        eng = [sub[(wid, f"engineer_{rd}_{i}")] for i in range(agents)]
        # a round's engineers start together, only after the whole previous round
        assert len({e.t_s for e in eng}) == 1
        assert eng[0].t_s >= prev_done
        for i in range(agents):
            e, rv, fx = (f"engineer_{rd}_{i}", f"review_{rd}_{i}", f"revise_{rd}_{i}")
            assert sub[(wid, rv)].t_s >= fin[(wid, e)].t_s
            assert sub[(wid, fx)].t_s >= fin[(wid, rv)].t_s
            assert sub[(wid, fx)].parents == [sub[(wid, e)].request_id,
                                              sub[(wid, rv)].request_id]
        prev_done = max(fin[(wid, f"revise_{rd}_{i}")].t_s for i in range(agents))
        eng_prompt.append(eng[0].prompt_tokens)
    # the shared context grows round by round
    assert eng_prompt == sorted(eng_prompt) and len(set(eng_prompt)) == rounds
    assert run.runner._engine.max_in_flight == agents  # type: ignore[union-attr]
    assert {e.stage for e in run.requests("finished")} == {
        "architect", "engineer", "reviewer", "reviser"}


@pytest.mark.parametrize("rate", [None, 4.0])
def test_interactive_arrivals_over_1000_conversations_match_the_rate_knob(
        rate: float | None) -> None:
    n = 1000
    run = run_fake("interactive", {}, rate=rate, workflows=n, max_tokens=1)
    queries = sorted(e.t_s for e in run.requests("submitted") if e.stage == "query")
    assert len(queries) == n
    measured = (n - 1) / (queries[-1] - queries[0])
    expected = rate if rate is not None else 1.0  # the workload's own default
    assert measured == pytest.approx(expected, rel=0.10)
    # follow-ups happen, after their parent and a think time
    followups = [e for e in run.requests("submitted") if e.stage == "followup"]
    assert 0.2 * n < len(followups) < 0.6 * n
    fin = {e.request_id: e for e in run.requests("finished")}
    gaps = [f.t_s - fin[f.parents[0]].t_s for f in followups]
    assert min(gaps) > 0 and 10 < sum(gaps) / len(gaps) < 20  # think_s mean 15


def test_interactive_prompts_share_the_system_prefix_and_grow_with_the_conversation() -> None:
    w = workloads.create("interactive", {"followup_prob": 1.0, "max_followups": 2})
    _, dag = dag_of(w)
    first, second, third = dag.requests
    assert first.prefix_key == "interactive.system"
    assert 5500 <= first.prompt_tokens <= 6900
    assert 183 <= first.max_tokens <= 800
    # a follow-up's prompt is the whole conversation so far, then more
    assert second.prompt.startswith(first.prompt)
    # prefix: the first prompt, its answer and the "Assistant:" between them
    assert second.prefix_tokens == first.prompt_tokens + first.max_tokens + 1
    assert third.prompt.startswith(second.prompt)
    assert third.prefix_key is not None and third.prefix_key != second.prefix_key
    other = dag_of(w, index=1)[1].requests[0]
    assert other.prefix_key == first.prefix_key
    system = system_prompt(1750)
    assert first.prefix_tokens == system.tokens
    assert other.prompt.startswith(system.text) and first.prompt.startswith(system.text)
    assert other.prompt != first.prompt


def test_composite_runs_all_three_kinds_together() -> None:
    params = {"interactive_rate": 1.0, "sequential_rate": 0.3, "agentic_rate": 0.2,
              "agentic.agents": 2, "agentic.rounds": 2, "agentic.brief_tokens": 100,
              "sequential.chunks": 4, "interactive.max_followups": 0}
    run = run_fake("composite", params, workflows=40, max_tokens=200)
    started = run.workflows("started")
    finished = run.workflows("finished")
    kinds = Counter(e.workload for e in started)
    assert set(kinds) == {"interactive", "sequential", "agentic"}
    assert len(finished) == 40
    # at some moment a workflow of every kind is in flight
    start = {e.workflow_id: e.t_s for e in started}
    end = {e.workflow_id: e.t_s for e in finished}
    kind = {e.workflow_id: e.workload for e in started}
    overlap = any(
        {kind[w] for w in start if start[w] <= t0 < end[w]} == set(kinds)
        for t0 in start.values())
    assert overlap
    # stage labels keep the kinds apart; ids say the kind
    labels = {e.stage for e in run.requests("finished")}
    assert {"interactive.query", "sequential.map", "sequential.reduce",
            "agentic.architect", "agentic.engineer"} <= labels
    for e in started:
        prefix = {"interactive": "chat", "sequential": "seq", "agentic": "agent"}[e.workload]
        assert e.workflow_id.startswith(prefix)
    stat_labels = {s["stage"] for s in run.summary["stages"]}
    assert "sequential.map" in stat_labels and "interactive.query" in stat_labels


def test_composite_mix_follows_the_configured_rates() -> None:
    w = CompositeWorkload.from_params({"interactive_rate": 1.0, "sequential_rate": 0.25,
                                       "agentic_rate": 0.05})
    assert w.arrival().rate_per_s == pytest.approx(1.3)
    rng = random.Random(7)
    kinds = Counter(w.kind_of(rng) for _ in range(13000))
    assert kinds["interactive"] == pytest.approx(10000, rel=0.05)
    assert kinds["sequential"] == pytest.approx(2500, rel=0.08)
    assert kinds["agentic"] == pytest.approx(500, rel=0.2)


@pytest.mark.parametrize("name", ["sequential", "interactive", "agentic", "composite"])
def test_workflows_are_deterministic_for_a_seed(name: str) -> None:
    w = workloads.create(name, {})
    a = [(r.node, r.prompt, r.prompt_tokens, r.max_tokens) for r in dag_of(w, 2, seed=5)[1].requests]
    b = [(r.node, r.prompt, r.prompt_tokens, r.max_tokens) for r in dag_of(w, 2, seed=5)[1].requests]
    c = [(r.node, r.prompt, r.prompt_tokens, r.max_tokens) for r in dag_of(w, 2, seed=6)[1].requests]
    assert a == b
    assert a != c


@pytest.mark.parametrize(
    ("name", "params", "needle"),
    [
        ("interactive", {"rate": 0}, "rate = 0 is out of range (more than 0, up to 10000)"),
        ("interactive", {"output_tokens_min": 900}, "output_tokens_max (800) is below"),
        ("interactive", {"followup_prob": 1.5}, "followup_prob"),
        ("interactive", {"colour": 1}, "unknown parameter 'colour'"),
        ("agentic", {"agents": 0}, "agents = 0 is out of range (1-256)"),
        ("agentic", {"agents": 200, "rounds": 100}, "stages; a workflow may have at most 1024"),
        ("sequential", {"chunks": 100_000_000}, "chunks = 100000000 is out of range (1-1023)"),
        ("sequential", {"chunks": "abc"}, "parameter chunks must be an integer, got 'abc'"),
        ("sequential", {"chunk_tokens": float("nan")},
         "parameter chunk_tokens must be an integer or a distribution, got nan"),
        ("interactive", {"think_s": float("inf")}, "think_s must be a finite number"),
        ("interactive", {"followup_prob": 1.5}, "followup_prob = 1.5 is out of range (0-1)"),
        ("agentic", {"agents": "many"}, "parameter agents must be an integer"),
        ("composite", {"interactive_rate": -1}, "interactive_rate = -1 is out of range (0-10000)"),
        ("composite", {"sequential.variant": "spiral"}, "variant must be chain or mapreduce"),
        ("composite", {"chat.rate": 2}, "unknown part 'chat'"),
        ("composite", {"agentic.rate": 2}, "set agentic_rate instead"),
    ],
)
def test_bad_parameters_are_one_line_errors(name: str, params: dict[str, object],
                                            needle: str) -> None:
    with pytest.raises(workloads.WorkloadError) as info:
        workloads.create(name, params)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)
