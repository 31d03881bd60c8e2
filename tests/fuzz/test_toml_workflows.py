"""Hostile TOML workflow files: documents drawn from a grammar of the real format
(docs/workflows.md) with values that do not belong (wrong types, nan and inf, negative
counts, `copies = 100000000`, cycles, unknown keys and stages, empty stages, huge
strings), and `-p` parameters as the command line makes them.

Loading is a `WorkloadError` of one line naming the file, or a workload whose every
workflow is a valid DAG within the bounds of workloads/base.py, built quickly. A few
loaded files also run for real: `wattflow run --headless --fast --workflows 2`.
"""

from __future__ import annotations

import json
import math
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workloads
from tests.fuzz._cli import check, wattflow
from workloads.base import (
    MAX_CALLS_PER_STAGE,
    MAX_STAGES_PER_WORKFLOW,
    CallResult,
    StageInputs,
    WorkflowSpec,
)
from workloads.toml_workflow import MAX_PROMPT_TOKENS, MAX_WORKFLOW_TOKENS, TomlWorkload

#: Loading and building one workflow (or three) of a file: far above what it takes.
LOAD_BOUND_S = 20.0

# -- writing TOML ---------------------------------------------------------------------
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        # JSON's escapes are TOML's basic-string escapes, but for the surrogate pairs
        # of astral characters: those are written as they are.
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def to_toml(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    tables = {k: v for k, v in doc.items() if k in ("params", "arrival") and isinstance(v, dict)}
    shared = doc.get("shared") if isinstance(doc.get("shared"), dict) else None
    stages = doc.get("stage") if isinstance(doc.get("stage"), list) else None
    for k, v in doc.items():
        if k not in tables and not (k == "shared" and shared is not None) and not (
                k == "stage" and stages is not None and all(isinstance(s, dict) for s in stages)):
            lines.append(f"{_key(k)} = {_value(v)}")
    for k, table in tables.items():
        lines.append(f"\n[{k}]")
        lines += [f"{_key(x)} = {_value(y)}" for x, y in table.items()]
    for name, spec in (shared or {}).items():
        if isinstance(spec, dict):
            lines.append(f"\n[shared.{_key(name)}]")
            lines += [f"{_key(x)} = {_value(y)}" for x, y in spec.items()]
        else:
            lines.append(f"\n[shared]\n{_key(name)} = {_value(spec)}")
    if stages is not None and all(isinstance(s, dict) for s in stages):
        for s in stages:
            lines.append("\n[[stage]]")
            lines += [f"{_key(x)} = {_value(y)}" for x, y in s.items()]
    return "\n".join(lines) + "\n"


# -- the grammar ----------------------------------------------------------------------
def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any],
           odds: int = 4) -> st.SearchStrategy[Any]:
    """`good` `odds` times in `odds + 1`, else `bad`: each field of a document may go
    wrong, but seldom all at once, so that many documents get far into the loader."""
    return st.sampled_from([False] * odds + [True]).flatmap(lambda b: bad if b else good)


text = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)  # TOML has no surrogates
NAMES = ["a", "b", "c", "map", "reduce", "a_0", "a_1", "b_0"]
PARAMS = ["n", "k", "t", "p", "s"]
good_names = st.sampled_from(NAMES)
names = mostly(good_names, st.one_of(st.sampled_from(["", "1x", "a b", "é", "x" * 300]), text))

# Numbers around every bound the loader has, and the values users mistype.
numbers = st.one_of(
    st.integers(0, 6),
    st.sampled_from([-1, -5, 1, 2, 3, 1023, 1024, 1025, 4096, 4097, 65536, 1_000_000,
                     1_000_001, 100_000_000, 10**18, 2**63 - 1, -(2**63)]),
    st.sampled_from([0.0, 0.5, 1.0, 1.5, -0.0, -0.5, 1e-300, 1e300, 86_400.0, 86_401.0,
                     10_000.0, 10_001.0, math.nan, math.inf, -math.inf]),
)
refs = st.sampled_from([f"${p}" for p in PARAMS] + ["$", "$nope", "abc", ""])
scalars = st.one_of(numbers, numbers, refs, st.booleans())
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.sampled_from(["mean", "MEAN", "x"]), scalars, max_size=2),
)
small = st.one_of(st.integers(1, 4), st.sampled_from(["$n", "$k"]))
counts = mostly(small, values)  # copies, fanout, output_tokens...


@st.composite
def prompts(draw: st.DrawFn) -> str:
    pieces = mostly(
        st.sampled_from(["Summarize: ", "hello world ", "\n", " ", "{{", "}}", "{parents}",
                         "{history}", "{copy}", "{call}", "{index}", "{passage:10}",
                         "{passage:3..20}", "{passage:$n}", "{shared:sys}", "{parent:a}",
                         "{parent:b}"]),
        st.one_of(st.sampled_from([
            "{", "}", "{}", "{unknown}", "{passage}", "{passage:}", "{passage:5..}",
            "{passage:0}", "{passage:20..3}", "{passage:1000000}", "{passage:1000001}",
            "{passage:$t}", "{passage:1_000}", "{passage:" + "9" * 5000 + "}",
            "{passage:٣}", "{shared:nope}", "{parent:nope}", "x" * 20_000]), text))
    return "".join(draw(st.lists(pieces, max_size=6)))


@st.composite
def stage(draw: st.DrawFn) -> dict[str, Any]:
    s: dict[str, Any] = {}
    if draw(mostly(st.just(True), st.just(False), odds=9)):
        s["name"] = draw(names)
    fields = draw(st.lists(st.sampled_from(
        ["label", "after", "after", "copies", "copies", "chain", "per_copy", "fanout",
         "fanout", "delay_s", "probability", "unknown"]), max_size=5, unique=True))
    for f in fields:
        if f == "after":
            s[f] = draw(mostly(st.lists(good_names, max_size=3),
                               st.one_of(st.lists(names, max_size=3), names, values)))
        elif f == "label":
            s[f] = draw(mostly(good_names, st.one_of(st.just("[/bold]"), values)))
        elif f in ("chain", "per_copy"):
            s[f] = draw(mostly(st.booleans(), values))
        elif f == "delay_s":
            s[f] = draw(mostly(st.sampled_from([0, 0.5, [0, 2], {"mean": 1.0}, "$t"]), values))
        elif f == "probability":
            s[f] = draw(mostly(st.sampled_from([0.0, 0.5, 1.0, "$p"]), values))
        elif f == "unknown":
            s["fanot"] = 3
        else:
            s[f] = draw(counts)
    if draw(mostly(st.just(True), st.just(False), odds=9)):
        s["prompt"] = draw(mostly(prompts(), values))
    if draw(mostly(st.just(True), st.just(False), odds=9)):
        s["output_tokens"] = draw(mostly(st.one_of(small, st.just([1, 8])), values))
    return s


@st.composite
def document(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["name"] = draw(mostly(st.sampled_from(["flow", "x.y-z"]), st.one_of(names, values)))
    if draw(st.booleans()):
        doc["description"] = draw(mostly(text, values))
    if draw(mostly(st.just(True), st.just(False))):
        doc["params"] = draw(st.fixed_dictionaries(
            {}, optional={"n": mostly(st.integers(1, 3), scalars),
                          "k": mostly(st.integers(1, 3), scalars),
                          "t": mostly(st.sampled_from([1, 2.5]), scalars),
                          "p": mostly(st.sampled_from([0.5, 1.0]), scalars),
                          "s": mostly(st.just("word"), scalars)}))
    if draw(st.booleans()):
        doc["arrival"] = draw(st.fixed_dictionaries(
            {}, optional={"rate": mostly(st.sampled_from([0.5, 10, "$t"]), values),
                          "concurrency": mostly(st.sampled_from([1, 4, "$n"]), values)}))
        if draw(mostly(st.just(False), st.just(True), odds=19)):
            doc["arrival"]["burst"] = 3
    if draw(st.booleans()):
        good = st.fixed_dictionaries({"sys": st.sampled_from([{"tokens": 20},
                                                             {"text": "You are helpful."}])})
        bad = st.dictionaries(
            st.sampled_from(["sys", "doc", "bad name"]),
            st.one_of(st.dictionaries(st.sampled_from(["tokens", "text", "x"]),
                                      st.one_of(values, text), max_size=2),
                      values), max_size=2)
        doc["shared"] = draw(mostly(good, bad))
    if draw(mostly(st.just(True), st.just(False), odds=9)):
        doc["stage"] = draw(st.lists(stage(), min_size=draw(mostly(st.just(1), st.just(0))),
                                     max_size=5))
    if draw(mostly(st.just(False), st.just(True), odds=19)):
        doc["colour"] = "blue"
    return doc


cli_values = st.one_of(  # what `-p KEY=VALUE` makes of the command line
    st.integers(-5, 5), st.sampled_from([0, 1024, 100_000_000, 10**30]),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.5, 1e308]),
    st.sampled_from(["abc", "", "$n", "1,2"]), st.booleans())
overrides = mostly(st.just({}), st.dictionaries(st.sampled_from([*PARAMS, "nope"]), cli_values,
                                                max_size=2), odds=2)


# -- checking -------------------------------------------------------------------------
def _results(n_calls: int, out_tokens: list[int]) -> list[CallResult]:
    # Short texts claiming the full token counts: the counts are what is bounded.
    return [CallResult(f"r{i}", "answer text", 1, t) for i, t in enumerate(out_tokens)]


def check_workflow(spec: WorkflowSpec) -> None:
    """A valid DAG within the bounds, whose builders all build."""
    order = spec.validate()
    assert len(spec.stages) <= MAX_STAGES_PER_WORKFLOW
    done: dict[str, list[CallResult]] = {}
    total = 0
    for s in order:
        assert 1 <= s.calls <= MAX_CALLS_PER_STAGE
        calls = s.build(StageInputs(spec.workflow_id, {d: done[d] for d in s.deps},
                                    random.Random(0)))
        assert len(calls) == s.calls
        for c in calls:
            assert 1 <= c.max_tokens <= 1_000_000, c.max_tokens
            assert c.prompt_tokens <= MAX_PROMPT_TOKENS, (s.node, c.prompt_tokens)
            total += c.prompt_tokens
        done[s.node] = _results(len(calls), [c.max_tokens for c in calls])
    assert total <= MAX_WORKFLOW_TOKENS


def load(text: str, params: dict[str, Any]) -> tuple[str, TomlWorkload | None]:
    d = tempfile.mkdtemp()
    path = str(Path(d) / "wf.toml")
    Path(path).write_text(text, encoding="utf-8", errors="surrogatepass")
    start = time.monotonic()
    try:
        w = workloads.create(path, params)
    except workloads.WorkloadError as exc:
        msg = str(exc)
        assert "\n" not in msg and msg.startswith(f"{path}: "), msg
        assert len(msg) < 400 + len(path), msg
        assert time.monotonic() - start < LOAD_BOUND_S
        return path, None
    assert isinstance(w, TomlWorkload)
    rng = random.Random(7)
    for i in range(3):
        check_workflow(w.workflow(i, rng))
    assert time.monotonic() - start < LOAD_BOUND_S, "loading and building took too long"
    return path, w


FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


@FUZZ
@given(doc=document(), params=overrides,
       damage=st.sampled_from(["none"] * 8 + ["cut", "junk", "nested"]),
       cut=st.integers(0, 2000), run=mostly(st.just(False), st.just(True), odds=9))
def test_toml_documents_load_or_fail_in_one_line(doc: dict[str, Any], params: dict[str, Any],
                                                 damage: str, cut: int, run: bool) -> None:
    text = to_toml(doc)
    if damage == "cut":
        text = text[:cut]
    elif damage == "junk":
        text += "\n[[stage]\nname = = 1\n"
    elif damage == "nested":
        text = "x = " + "[" * 5000 + "]" * 5000 + "\n" + text
    path, w = load(text, params)
    if w is not None and run:
        _run(path, params)


# -- DAGs: files that load, shaped to stress the graph ------------------------------------
@st.composite
def dag_document(draw: st.DrawFn, numbers: st.SearchStrategy[Any],
                 passages: st.SearchStrategy[str]) -> dict[str, Any]:
    """Files that mostly load: stage names from a few (copies named like other stages),
    `after` naming earlier or later stages, placeholders that fit the stage, parameters
    defined; `numbers` for the counts."""
    pool = ["a", "b", "c", "d", "a_0", "b_1"]
    names_ = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=5, unique=True))
    stages = []
    for name in names_:
        s: dict[str, Any] = {"name": name}
        others = [n for n in names_ if n != name]
        if others and draw(st.booleans()):
            s["after"] = draw(st.lists(st.sampled_from(others), max_size=2, unique=True))
        fits = ["Go: ", "{shared:sys}", "{copy} {call} {index}", "{{x}}"]
        fits += [f"{{parent:{a}}}" for a in s.get("after", [])]
        fits += ["{parents}", "{history}", "{history}"] if s.get("after") else []
        s["prompt"] = "".join(draw(st.lists(st.one_of(st.sampled_from(fits), passages),
                                            max_size=4)))
        s["output_tokens"] = draw(mostly(st.sampled_from([1, 5, [1, 9], "$n"]), numbers))
        for f in draw(st.lists(st.sampled_from(["copies", "copies", "fanout", "chain",
                                                "per_copy", "probability", "delay_s",
                                                "label"]), max_size=4, unique=True)):
            s[f] = draw({"chain": st.booleans(), "per_copy": st.booleans(),
                         "probability": st.sampled_from([0.0, 0.5, 1.0]),
                         "delay_s": st.sampled_from([0, 0.5, [0, 1], {"mean": 0.2}]),
                         "label": st.sampled_from(["x", "y", "[/bold]"])}.get(f, numbers))
        stages.append(s)
    doc: dict[str, Any] = {"params": {"n": draw(st.sampled_from([1, 2, 3, 1024, 4096]))},
                           "stage": stages, "shared": {"sys": {"tokens": 50}}}
    doc["arrival"] = draw(st.sampled_from([{}, {"rate": 5.0}, {"concurrency": 2}]))
    return doc


big = mostly(st.sampled_from([1, 2, 3, "$n"]),
             st.sampled_from([16, 100, 512, 1000, 1024, 1025, 4096, 4097, 100_000_000]), odds=2)
big_passages = st.sampled_from(["{passage:5..40}", "{passage:$n}", "{passage:100000}"])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(doc=dag_document(big, big_passages), run=mostly(st.just(False), st.just(True), odds=9))
def test_dags_are_valid_and_bounded(doc: dict[str, Any], run: bool) -> None:
    path, w = load(to_toml(doc), {})
    if w is not None and run:  # the largest files the loader accepts, on the twin
        # Prompts past the twin's model length (131072 tokens) fail every request: a
        # failed run, said in one line.
        _run(path, ok=(0, 1))


def _cli(v: Any) -> str:
    """A value as typed after `-p KEY=` (the command line turns it back into `v`)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def _run(path: str, params: dict[str, Any] | None = None, ok: tuple[int, ...] = (0,)) -> None:
    session = str(Path(path).with_suffix(".jsonl"))
    ps = [f"-p{k}={_cli(v)}" for k, v in (params or {}).items()]
    o = wattflow("run", "--headless", "--fast", "--workload", path, "--workflows", "2",
                 "--max-tokens", "16", "--session", session, *ps)
    check(o)
    assert o.code in ok, o.describe()
    if o.code == 1:
        assert "exceeds the sim engine's max model length" in o.err, o.describe()
    assert "warning [workflow]" not in o.out, o.describe()  # a workflow that could not start


# -- a few real runs --------------------------------------------------------------------
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(doc=dag_document(st.sampled_from([1, 2, 3, "$n"]),
                       st.sampled_from(["{passage:5..40}", "{passage:$n}"])))
def test_loaded_files_run(doc: dict[str, Any]) -> None:
    doc["params"]["n"] = min(doc["params"]["n"], 3)
    path, w = load(to_toml(doc), {})
    if w is not None:
        _run(path)
