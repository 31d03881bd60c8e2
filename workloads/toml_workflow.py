"""User-defined workflows from a TOML file (the format is documented in docs/workflows.md).

Everything is checked when the file is loaded, so a mistake is one line naming the file
and the field (`WorkloadError`) before any engine starts. A loaded file is a workload
like the built-in ones: each workflow expands the file's stages into DAG nodes (copies,
chains, fan-outs), draws its text and lengths from one seeded generator, and fills the
prompt templates from the parents' real outputs when the stage runs.
"""

from __future__ import annotations

import heapq
import math
import os
import random
import re
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workloads import WorkloadError
from workloads.base import (
    MAX_CALLS_PER_STAGE,
    MAX_STAGES_PER_WORKFLOW,
    Arrival,
    Call,
    CallResult,
    StageInputs,
    StageSpec,
    WorkflowSpec,
)
from workloads.lengths import Fixed, Length, LengthError, Uniform, parse_length
from workloads.params import MAX_CONCURRENCY, MAX_RATE, MAX_TOKENS
from workloads.text import Piece, compose, passage

TOP_FIELDS = ("name", "description", "params", "arrival", "shared", "stage")
ARRIVAL_FIELDS = ("rate", "concurrency")
SHARED_FIELDS = ("tokens", "text")
STAGE_FIELDS = ("name", "label", "after", "copies", "chain", "per_copy", "fanout", "prompt",
                "output_tokens", "delay_s", "probability")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class _Bad(Exception):
    """A field-level problem; the loader adds the file name."""


# -- template segments ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Lit:
    text: str


@dataclass(frozen=True, slots=True)
class _Passage:
    length: Length


@dataclass(frozen=True, slots=True)
class _Ref:
    what: str  # parents | parent | history | shared | copy | call | index
    arg: str = ""


_Seg = _Lit | _Passage | _Ref


@dataclass(slots=True)
class _Dist:
    """A number fixed, uniform in [lo, hi], or exponential with mean `lo` (`exp`)."""

    lo: float
    hi: float
    exp: bool = False

    def draw(self, r: random.Random, whole: bool) -> float:
        if self.exp:
            return r.expovariate(1.0 / self.lo) if self.lo > 0 else 0.0
        if self.lo == self.hi:
            return self.lo
        return r.randint(int(self.lo), int(self.hi)) if whole else r.uniform(self.lo, self.hi)

    @property
    def fixed(self) -> bool:
        return not self.exp and self.lo == self.hi


@dataclass(slots=True)
class _Stage:
    name: str
    label: str
    after: list[str]
    copies: int
    suffixed: bool  # node ids name_<j> (`copies` was given) or just name
    chain: bool
    per_copy: bool
    fanout: int
    prompt: list[_Seg]
    output_tokens: Length
    delay_s: _Dist
    probability: float

    def nodes(self) -> list[str]:
        return [f"{self.name}_{j}" if self.suffixed else self.name for j in range(self.copies)]


@dataclass(slots=True)
class _Plan:
    """One node's draws, made when the workflow is created."""

    node: str
    stage: _Stage
    copy: int
    deps: tuple[str, ...]
    delay_s: float
    calls: list[tuple[list[str | Piece | _Ref], int]] = field(default_factory=list)


# -- the workload -----------------------------------------------------------------------
class TomlWorkload:
    def __init__(self, path: str, name: str, params: dict[str, Any], arrival: Arrival,
                 shared: dict[str, Piece], stages: list[_Stage],
                 order: list[int] | None = None) -> None:
        self.path = path
        self.name = name
        self._params = params
        self._arrival = arrival
        self.shared = shared
        self.stages = stages  # in file order: the order of the draws
        # Dependency order (file order where the file allows it): drops propagate in it,
        # and the DAG is listed in it.
        self.order = order if order is not None else list(range(len(stages)))

    def params(self) -> dict[str, Any]:
        return {"file": self.path, **self._params}

    def arrival(self) -> Arrival:
        return self._arrival

    def workflow(self, index: int, rng: random.Random) -> WorkflowSpec:
        wid = f"{self.name}{index}"
        # One draw from the shared rng, like the built-in workloads: same seed, same text.
        r = random.Random(rng.random())
        by_name = {s.name: s for s in self.stages}
        dropped: set[str] = set()
        plans: dict[str, list[_Plan]] = {}
        for st in self.stages:
            if st.probability < 1.0 and r.random() >= st.probability:
                dropped.add(st.name)
            if any(a in dropped for a in st.after):
                dropped.add(st.name)
            if st.name in dropped:
                continue
            nodes = st.nodes()
            for j, node in enumerate(nodes):
                if st.chain and j > 0:
                    deps: tuple[str, ...] = (nodes[j - 1],)
                else:
                    deps = tuple(d for a in st.after for d in _outputs(by_name[a], st, j))
                plan = _Plan(node, st, j, deps, st.delay_s.draw(r, whole=False))
                for c in range(st.fanout):
                    parts: list[str | Piece | _Ref] = []
                    for seg in st.prompt:
                        if isinstance(seg, _Lit):
                            parts.append(seg.text)
                        elif isinstance(seg, _Passage):
                            n = seg.length.sample(r)
                            parts.append(Piece(passage(n, r), n))
                        elif seg.what == "copy":
                            parts.append(str(j))
                        elif seg.what == "call":
                            parts.append(str(c))
                        elif seg.what == "index":
                            parts.append(str(index))
                        elif seg.what == "shared":
                            parts.append(self.shared[seg.arg])
                        else:
                            parts.append(seg)  # filled from the parents when the stage runs
                    plan.calls.append((parts, st.output_tokens.sample(r)))
                plans.setdefault(st.name, []).append(plan)
        # A stage named in `after` before its own table may have been dropped after its
        # dependants were drawn: drop those too (the draws above stay in file order).
        ordered: list[_Plan] = []
        for i in self.order:
            st = self.stages[i]
            if any(a in dropped for a in st.after):
                dropped.add(st.name)
            if st.name not in dropped:
                ordered += plans.get(st.name, [])
        said: dict[str, list[Piece]] = {}  # each node's prompts, for {history}
        specs = [StageSpec(node=pl.node, stage=pl.stage.label, deps=pl.deps,
                           calls=len(pl.calls), delay_s=pl.delay_s,
                           build=self._builder(pl, wid, by_name, said))
                 for pl in ordered]
        return WorkflowSpec(workflow_id=wid, workload=self.name, stages=specs)

    def _builder(self, plan: _Plan, wid: str, by_name: dict[str, _Stage],
                 said: dict[str, list[Piece]]) -> Callable[[StageInputs], list[Call]]:
        def build(inp: StageInputs) -> list[Call]:
            calls: list[Call] = []
            for parts, out_tokens in plan.calls:
                filled: list[str | Piece] = []
                for p in parts:
                    filled.extend(_fill(p, inp, by_name, said) if isinstance(p, _Ref) else [p])
                prompt, tokens = compose(filled)
                key, prefix_tokens = self._prefix(parts, filled, inp, wid)
                calls.append(Call(prompt, tokens, out_tokens, prefix_key=key,
                                  prefix_tokens=prefix_tokens))
            said[plan.node] = [Piece(c.prompt, c.prompt_tokens) for c in calls]
            return calls

        return build

    def _prefix(self, parts: list[str | Piece | _Ref], filled: list[str | Piece],
                inp: StageInputs, wid: str) -> tuple[str | None, int]:
        """A prompt that starts with a shared text or the conversation so far names it
        as a prefix, so engines with prefix caching reuse it."""
        if not parts:
            return None, 0
        first = parts[0]
        for name, piece in self.shared.items():
            if first is piece:
                return f"shared.{name}", piece.tokens
        if isinstance(first, _Ref) and first.what == "history" and inp.parents:
            n = _history_len(inp)
            return f"{wid}.{'+'.join(inp.parents)}.history", compose(filled[:n])[1]
        return None, 0


def _outputs(parent: _Stage, child: _Stage, j: int) -> list[str]:
    """The nodes of `parent` that `child`'s copy j waits for."""
    nodes = parent.nodes()
    if parent.chain:
        return [nodes[-1]]
    if child.per_copy:
        return [nodes[j]]
    return nodes


def _results_text(results: list[CallResult]) -> Piece:
    return Piece("\n".join(r.text for r in results), sum(r.output_tokens for r in results))


def _history_len(inp: StageInputs) -> int:
    return sum(len(rs) * 3 for rs in inp.parents.values())


def _fill(ref: _Ref, inp: StageInputs, by_name: dict[str, _Stage],
          said: dict[str, list[Piece]]) -> list[str | Piece]:
    if ref.what == "parents":
        return [_results_text([r for rs in inp.parents.values() for r in rs])]
    if ref.what == "parent":
        nodes = set(by_name[ref.arg].nodes())
        return [_results_text([r for n, rs in inp.parents.items() if n in nodes for r in rs])]
    # history: each parent call's prompt and its answer, in order
    out: list[str | Piece] = []
    for node, results in inp.parents.items():
        prompts = said.get(node, [])
        for k, res in enumerate(results):
            out += [prompts[k] if k < len(prompts) else Piece("", 0), "\n",
                    Piece(res.text, res.output_tokens)]
    return out


# -- loading ----------------------------------------------------------------------------
#: Bounds on a file's numbers, so that a typo is a one-line error instead of a run that
#: fills the machine's memory. A copy is a node of the workflow's DAG (a stage, in the
#: runner's terms) and a fan-out is the calls of one node, hence the DAG's bounds.
MAX_COPIES = MAX_STAGES_PER_WORKFLOW
MAX_FANOUT = MAX_CALLS_PER_STAGE
MAX_DELAY_S = 86_400.0  # a day of think time
#: A workflow's calls, and its prompts' tokens (passages, shared texts, parents'
#: outputs, as estimated when the file is loaded): past these one workflow would hold
#: hundreds of megabytes of prompt text.
MAX_CALLS_PER_WORKFLOW = 16 * MAX_CALLS_PER_STAGE
MAX_PROMPT_TOKENS = MAX_TOKENS  # one call's prompt; beyond any model's context
MAX_WORKFLOW_TOKENS = 16 * MAX_TOKENS
MAX_FILE_BYTES = 16 * 1024 * 1024  # a workflow file is a few kilobytes


@dataclass(frozen=True, slots=True)
class _Range:
    lo: float
    hi: float
    whole: bool
    lo_open: bool = False

    def __str__(self) -> str:
        lo, hi = _num_text(self.lo), _num_text(self.hi)
        return f"more than {lo}, up to {hi}" if self.lo_open else f"{lo}-{hi}"

    def __contains__(self, v: float) -> bool:
        return (v > self.lo if self.lo_open else v >= self.lo) and v <= self.hi


COPIES = _Range(1, MAX_COPIES, True)
FANOUT = _Range(1, MAX_FANOUT, True)
TOKENS = _Range(1, MAX_TOKENS, True)
DELAY = _Range(0, MAX_DELAY_S, False)
PROBABILITY = _Range(0, 1, False)
RATE = _Range(0, MAX_RATE, False, lo_open=True)
CONCURRENCY = _Range(1, MAX_CONCURRENCY, True)


def _num_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _show(value: Any, limit: int = 40) -> str:
    """A value for an error message, cut so the message stays one short line."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and math.isfinite(value):
        text = _num_text(value)
    else:
        text = str(value) if isinstance(value, int | float) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_toml_workload(path: str, params: dict[str, Any] | None = None) -> TomlWorkload:
    """Load and check a workflow file; any mistake is a WorkloadError of one line
    that names the file and the field."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise WorkloadError(f"{path}: {what}, not a workflow file")
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise WorkloadError(f"{path}: no such file") from None
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise WorkloadError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB;"
                            " a workflow file is a few kilobytes")
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise WorkloadError(f"{path}: not valid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise WorkloadError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # arrays nested thousands deep
        raise WorkloadError(f"{path}: not valid TOML: nested too deep") from None
    try:
        return _Loader(path, doc, params or {}).load()
    except _Bad as exc:
        raise WorkloadError(f"{path}: {exc}") from None


class _Loader:
    def __init__(self, path: str, doc: dict[str, Any], overrides: dict[str, Any]) -> None:
        self.path = path
        self.doc = doc
        self.overrides = overrides
        self.params: dict[str, Any] = {}

    def load(self) -> TomlWorkload:
        d = self.doc
        _known(d, TOP_FIELDS, "")
        name = d.get("name", Path(self.path).stem)
        if not isinstance(name, str) or not _NAME.match(name):
            raise _Bad(f"name: must be a word of letters, digits, '_', '.', '-',"
                       f" got {_show(name)}")
        if "description" in d and not isinstance(d["description"], str):
            raise _Bad("description: must be a string")
        self.params = self._params(_table(d, "params"))
        arrival = self._arrival(_table(d, "arrival"))
        shared = self._shared(_table(d, "shared"))
        raw_stages = d.get("stage")
        if raw_stages is None:
            raise _Bad("stage: no [[stage]] tables; a workflow needs at least one")
        if not isinstance(raw_stages, list) or not all(isinstance(s, dict) for s in raw_stages):
            raise _Bad("stage: must be an array of tables ([[stage]])")
        if len(raw_stages) > MAX_STAGES_PER_WORKFLOW:
            raise _Bad(f"stage: {len(raw_stages)} [[stage]] tables, more than"
                       f" {MAX_STAGES_PER_WORKFLOW} (the nodes of one workflow)")
        stages = [self._stage(i, s, shared) for i, s in enumerate(raw_stages)]
        order = self._check_graph(stages)
        _check_size(stages, order, shared)
        return TomlWorkload(self.path, name, self.params, arrival, shared, stages, order)

    # parameters --------------------------------------------------------------------
    def _params(self, table: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in table.items():
            if isinstance(value, dict):  # a length distribution, checked where it is used
                out[key] = value
                continue
            if not isinstance(value, int | float | str | bool):
                raise _Bad(f"params.{key}: must be a number, string, boolean or"
                           " distribution table")
            if isinstance(value, float) and not math.isfinite(value):
                raise _Bad(f"params.{key}: must be a finite number, got {_show(value)}")
            out[key] = value
        for key, value in self.overrides.items():
            if key not in out:
                known = ", ".join(sorted(out)) or "none"
                raise _Bad(f"parameter {_show(key)} is not in the file's [params]"
                           f" (known: {known})")
            out[key] = _override(key, value, out[key])
        return out

    def _resolve(self, value: Any, owner: str, field: str) -> tuple[Any, str]:
        """A field's value, with "$name" looked up in [params]; and, for messages,
        which parameter it came from ("" when none)."""
        if isinstance(value, str) and value.startswith("$"):
            key = value[1:]
            if key not in self.params:
                raise _Bad(f"{owner}.{field}: unknown parameter {_cut(value)}"
                           " (add it to [params])")
            return self.params[key], f" (parameter {key})"
        return value, ""

    def _number(self, value: Any, owner: str, field: str, rng: _Range) -> float:
        """A number within `rng`; anything else is one line naming the field, the
        value (and the parameter it came from) and the range."""
        v, source = self._resolve(value, owner, field)
        said = f"{owner}: {field} = {_show(v)}{source}"
        if isinstance(v, bool) or not isinstance(v, int | float) or (
                rng.whole and not isinstance(v, int)):
            kind = "a whole number" if rng.whole else "a number"
            raise _Bad(f"{said} is not {kind} ({rng})")
        if not math.isfinite(v):
            raise _Bad(f"{said} is not a finite number ({rng})")
        if v not in rng:
            raise _Bad(f"{said} is out of range ({rng})")
        return v

    def _int(self, value: Any, owner: str, field: str, rng: _Range) -> int:
        return int(self._number(value, owner, field, rng))

    def _bool(self, value: Any, owner: str, field: str) -> bool:
        v, source = self._resolve(value, owner, field)
        if not isinstance(v, bool):
            raise _Bad(f"{owner}.{field}: must be true or false, got {_show(v)}{source}")
        return v

    def _length(self, value: Any, owner: str, field: str) -> Length:
        """A token count: N, [min, max] drawn uniformly (as before distributions: the
        same draws), a distribution table { dist = ..., ... } or its written form
        ("lognormal:mean=300,spread=0.8"); "$name" may name any of these in [params]."""
        v, source = self._resolve(value, owner, field)
        if isinstance(v, list):
            d = self._dist(v, owner, field, TOKENS, exp=False)
            return Fixed(int(d.lo)) if d.fixed else Uniform(int(d.lo), int(d.hi))
        if (isinstance(v, dict) and "dist" in v) or (isinstance(v, str)
                                                      and not v.startswith("$")):
            try:
                return parse_length(v, f"{owner}.{_cut(field)}{source}",
                                    base_dir=Path(self.path).parent)
            except LengthError as exc:
                raise _Bad(str(exc)) from None
        return Fixed(self._int(value, owner, field, TOKENS))

    def _dist(self, value: Any, owner: str, field: str, rng: _Range,
              exp: bool = True) -> _Dist:
        """N, [min, max] drawn uniformly, or (`exp`) { mean = N } drawn exponentially."""
        v, _ = self._resolve(value, owner, field)
        if isinstance(v, list):
            if len(v) != 2:
                raise _Bad(f"{owner}.{field}: a range is [min, max], got {len(v)} values")
            lo = self._number(v[0], owner, f"{field}[0]", rng)
            hi = self._number(v[1], owner, f"{field}[1]", rng)
            if hi < lo:
                raise _Bad(f"{owner}.{field}: range [min, max] has max {_show(hi)}"
                           f" below min {_show(lo)}")
            return _Dist(float(lo), float(hi))
        if isinstance(v, dict) and exp:
            _known(v, ("mean",), f"{owner}.{field}")
            if "mean" not in v:
                raise _Bad(f"{owner}.{field}: an exponential draw is {{ mean = SECONDS }}")
            mean = self._number(v["mean"], owner, f"{field}.mean", rng)
            return _Dist(float(mean), 0.0, exp=True)
        x = float(self._number(value, owner, field, rng))
        return _Dist(x, x)

    # sections ----------------------------------------------------------------------
    def _arrival(self, table: dict[str, Any]) -> Arrival:
        _known(table, ARRIVAL_FIELDS, "arrival")
        rate = self._number(table["rate"], "arrival", "rate", RATE) if "rate" in table else None
        conc = self._int(table.get("concurrency", 1), "arrival", "concurrency", CONCURRENCY)
        return Arrival(rate_per_s=None if rate is None else float(rate), concurrency=conc)

    def _shared(self, table: dict[str, Any]) -> dict[str, Piece]:
        out: dict[str, Piece] = {}
        total = 0
        for key, spec in table.items():
            where = f"shared.{key}"
            if not _NAME.match(key):
                raise _Bad(f"{where}: a shared text's name is a word, got {_show(key)}")
            if not isinstance(spec, dict):
                raise _Bad(f"{where}: must be a table with tokens = N or text = \"...\"")
            _known(spec, SHARED_FIELDS, where)
            if ("tokens" in spec) == ("text" in spec):
                raise _Bad(f"{where}: give exactly one of tokens and text")
            if "text" in spec:
                if not isinstance(spec["text"], str):
                    raise _Bad(f"{where}.text: must be a string")
                out[key] = Piece(*compose([spec["text"]]))
            else:
                n = self._int(spec["tokens"], where, "tokens", TOKENS)
                total += n
                if total > MAX_WORKFLOW_TOKENS:
                    raise _Bad(f"{where}: tokens = {n}: the shared texts come to {total}"
                               f" tokens, more than {MAX_WORKFLOW_TOKENS}")
                # The same text for every workflow and run: seeded by the name alone.
                out[key] = Piece(passage(n, random.Random(f"shared.{key}")), n)
        return out

    def _stage(self, i: int, s: dict[str, Any], shared: dict[str, Piece]) -> _Stage:
        raw_name = s.get("name")
        if isinstance(raw_name, str) and _NAME.match(raw_name):
            where = f"stage '{_cut(raw_name)}'"
        else:
            where = f"stage[{i}]"
        _known(s, STAGE_FIELDS, where)
        if raw_name is None:
            raise _Bad(f"{where}.name: missing (every stage needs a name)")
        if not isinstance(raw_name, str) or not _NAME.match(raw_name):
            raise _Bad(f"{where}.name: must be a word of letters, digits, '_', '.', '-',"
                       f" got {_show(raw_name)}")
        label = s.get("label", raw_name)
        if not isinstance(label, str) or not label:
            raise _Bad(f"{where}.label: must be a non-empty string")
        after = s.get("after", [])
        if isinstance(after, str):
            after = [after]
        if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
            raise _Bad(f"{where}.after: must be a list of stage names")
        if len(set(after)) != len(after):
            raise _Bad(f"{where}.after: names a stage twice")
        if "prompt" not in s:
            raise _Bad(f"{where}.prompt: missing (every stage needs a prompt template)")
        if not isinstance(s["prompt"], str):
            raise _Bad(f"{where}.prompt: must be a string")
        chain = self._bool(s.get("chain", False), where, "chain")
        per_copy = self._bool(s.get("per_copy", False), where, "per_copy")
        if chain and per_copy:
            raise _Bad(f"{where}.per_copy: cannot be combined with chain")
        prob = float(self._number(s.get("probability", 1.0), where, "probability", PROBABILITY))
        if "output_tokens" not in s:
            raise _Bad(f"{where}.output_tokens: missing (tokens each call generates)")
        return _Stage(
            name=raw_name, label=label, after=list(after),
            copies=self._int(s.get("copies", 1), where, "copies", COPIES),
            suffixed="copies" in s, chain=chain, per_copy=per_copy,
            fanout=self._int(s.get("fanout", 1), where, "fanout", FANOUT),
            prompt=self._template(s["prompt"], where, after, shared),
            output_tokens=self._length(s["output_tokens"], where, "output_tokens"),
            delay_s=self._dist(s.get("delay_s", 0), where, "delay_s", DELAY),
            probability=prob,
        )

    def _template(self, text: str, where: str, after: list[str],
                  shared: dict[str, Piece]) -> list[_Seg]:
        segs: list[_Seg] = []
        pos = 0
        lit: list[str] = []

        def flush() -> None:
            if "".join(lit):
                segs.append(_Lit("".join(lit)))
            lit.clear()

        for m in _PLACEHOLDER.finditer(text):
            lit.append(text[pos:m.start()])
            pos = m.end()
            tok = m.group(0)
            if tok in ("{{", "}}"):
                lit.append(tok[0])
                continue
            if m.group(1) is None:
                raise _Bad(f"{where}.prompt: unmatched '{tok}' at character {m.start()}"
                           " (write {{ or }} for a literal brace)")
            flush()
            segs.append(self._placeholder(m.group(1).strip(), where, after, shared))
        lit.append(text[pos:])
        flush()
        return segs

    def _placeholder(self, body: str, where: str, after: list[str],
                     shared: dict[str, Piece]) -> _Seg:
        what, _, arg = body.partition(":")
        what, arg = what.strip(), arg.strip()
        field = f"prompt {{{_cut(body)}}}"
        here = f"{where}.{field}"
        if what == "passage":
            lo_s, dots, hi_s = arg.partition("..")
            if not dots and lo_s.strip().startswith("$"):
                # A parameter: a number or a distribution ([params] table or -p text).
                return _Passage(self._length(lo_s.strip(), where, field))
            lo = self._int(_literal_int(lo_s), where, field, TOKENS)
            hi = self._int(_literal_int(hi_s), where, field, TOKENS) if dots else lo
            if hi < lo:
                raise _Bad(f"{here}: range has max {hi} below min {lo}")
            return _Passage(Fixed(lo) if lo == hi else Uniform(lo, hi))
        if what in ("parents", "history", "copy", "call", "index") and not arg:
            if what == "history" and not after:
                raise _Bad(f"{here}: the stage has no parents (set after)")
            return _Ref(what)
        if what == "parent" and arg:
            if arg not in after:
                raise _Bad(f"{here}: {_show(arg)} is not in this stage's after list")
            return _Ref("parent", arg)
        if what == "shared" and arg:
            if arg not in shared:
                raise _Bad(f"{here}: no [shared.{_cut(arg)}] table")
            return _Ref("shared", arg)
        raise _Bad(f"{here}: unknown placeholder (use passage:N, passage:MIN..MAX, parents,"
                   " parent:NAME, history, shared:NAME, copy, call, index)")

    def _check_graph(self, stages: list[_Stage]) -> list[int]:
        """Names, dependencies and bounds of the DAG; returns the stages' indices in
        dependency order, file order where the file allows it (no recursion: a file
        may chain a thousand stages)."""
        by_name: dict[str, int] = {}
        for i, st in enumerate(stages):
            if st.name in by_name:
                raise _Bad(f"stage '{_cut(st.name)}'.name: two stages have this name")
            by_name[st.name] = i
        owner: dict[str, str] = {}  # node id -> stage
        nodes = 0
        for st in stages:
            nodes += st.copies
            if nodes > MAX_STAGES_PER_WORKFLOW:
                raise _Bad(f"stage '{_cut(st.name)}': a workflow has {nodes} nodes by this stage"
                           f" (each copy of each stage is one), more than"
                           f" {MAX_STAGES_PER_WORKFLOW}")
            for node in st.nodes():
                if node in owner:
                    raise _Bad(f"stage '{_cut(st.name)}'.name: its node {_show(node)} is"
                               f" also a node of stage '{_cut(owner[node])}' (copies are named"
                               " NAME_0, NAME_1, ...)")
                owner[node] = st.name
        for st in stages:
            for a in st.after:
                if a not in by_name:
                    raise _Bad(f"stage '{_cut(st.name)}'.after: no stage named {_show(a)}")
                parent = stages[by_name[a]]
                if st.per_copy and not parent.chain and parent.copies != st.copies:
                    raise _Bad(f"stage '{_cut(st.name)}'.per_copy: {st.copies} copies but stage"
                               f" '{_cut(a)}' has {parent.copies}")
        # Kahn's algorithm, taking the first ready stage in file order each time.
        waiting = [len(st.after) for st in stages]
        children: list[list[int]] = [[] for _ in stages]
        for i, st in enumerate(stages):
            for a in st.after:
                children[by_name[a]].append(i)
        ready = [i for i, n in enumerate(waiting) if n == 0]
        heapq.heapify(ready)
        order: list[int] = []
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for c in children[i]:
                waiting[c] -= 1
                if waiting[c] == 0:
                    heapq.heappush(ready, c)
        if len(order) < len(stages):
            # Every stage left waits for another one left: follow them to a cycle.
            left = {i for i, n in enumerate(waiting) if n > 0}
            path = [min(left)]
            while True:
                nxt = next(by_name[a] for a in stages[path[-1]].after if by_name[a] in left)
                if nxt in path:
                    cycle = [_cut(stages[i].name) for i in path[path.index(nxt):]]
                    shown = [*cycle, cycle[0]] if len(cycle) <= 6 else [
                        *cycle[:3], "...", *cycle[-2:], cycle[0]]
                    what = "dependency cycle" if len(cycle) <= 6 else \
                        f"dependency cycle of {len(cycle)} stages"
                    raise _Bad(f"stage '{cycle[0]}'.after: {what}: {' -> '.join(shown)}")
                path.append(nxt)
        return order


def _override(key: str, value: Any, default: Any) -> Any:
    """A `-p KEY=VALUE` value checked against the type of the file's default."""
    def bad(want: str) -> _Bad:
        return _Bad(f"parameter {key}: expected {want} (like its default {_show(default)}),"
                    f" got {_show(value)}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, dict) or (isinstance(default, int) and isinstance(value, str)
                                     and ":" in value):
        # A length: a whole number or a distribution's written form ("exp:200"),
        # checked where it is used.
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise bad("a whole number or a distribution")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        if not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    # A text parameter: the command line has made numbers and booleans of it.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise bad("a text")


def _literal_tokens(text: str) -> int:
    """An upper estimate of a literal's tokens, for the size bounds (by characters as
    well as words: memory goes by characters)."""
    return max(len(text) // 4, round(len(text.split()) * 1.33)) + 1


def _check_size(stages: list[_Stage], order: list[int], shared: dict[str, Piece]) -> None:
    """Bound the calls of a workflow and the tokens of its prompts, estimated from the
    file: passages at their maximum, parents' outputs at `output_tokens`' maximum, and
    {history} at its parents' own prompts (which is what makes it grow, along a chain
    or through fan-in)."""
    by_name = {st.name: st for st in stages}
    largest: dict[str, int] = {}  # each stage's largest prompt, in tokens
    calls = total = 0
    for i in order:
        st = stages[i]
        calls += st.copies * st.fanout
        if calls > MAX_CALLS_PER_WORKFLOW:
            raise _Bad(f"stage '{_cut(st.name)}': {st.copies} copies x fanout {st.fanout} make"
                       f" {calls} calls in a workflow, more than {MAX_CALLS_PER_WORKFLOW}")
        fixed = 0
        refs: list[_Ref] = []
        for seg in st.prompt:
            if isinstance(seg, _Lit):
                fixed += _literal_tokens(seg.text)
            elif isinstance(seg, _Passage):
                fixed += seg.length.estimate_max()
            elif seg.what == "shared":
                fixed += shared[seg.arg].tokens
            elif seg.what in ("copy", "call", "index"):
                fixed += 8
            else:
                refs.append(seg)
        # Copy 0 (every copy, unless a chain) waits for its `after` stages' nodes...
        size = fixed + _parent_tokens(refs, [
            (by_name[a], 1 if by_name[a].chain or st.per_copy else by_name[a].copies,
             largest[a]) for a in st.after])
        biggest, stage_total = size, st.copies * st.fanout * size
        if st.chain and st.copies > 1:
            # ... and in a chain copy j waits for copy j-1 alone.
            stage_total = st.fanout * size
            for _ in range(st.copies - 1):
                size = fixed + _parent_tokens(refs, [(st, 1, size)])
                biggest = max(biggest, size)
                stage_total += st.fanout * size
                if biggest > MAX_PROMPT_TOKENS:
                    break
        if biggest > MAX_PROMPT_TOKENS:
            raise _Bad(f"stage '{_cut(st.name)}'.prompt: a call's prompt can reach about {biggest}"
                       f" tokens, more than {MAX_PROMPT_TOKENS} (passages, shared texts,"
                       " {parents} and {history} add up)")
        total += stage_total
        if total > MAX_WORKFLOW_TOKENS:
            raise _Bad(f"stage '{_cut(st.name)}': a workflow's prompts come to about {total}"
                       f" tokens by this stage, more than {MAX_WORKFLOW_TOKENS} (fewer copies,"
                       " a smaller fanout or shorter passages)")
        largest[st.name] = biggest


def _parent_tokens(refs: list[_Ref], parents: list[tuple[_Stage, int, int]]) -> int:
    """Tokens the placeholders `refs` fill in from `parents`, given as (stage, how many
    of its nodes are waited for, its largest prompt)."""
    n = 0
    for ref in refs:
        for p, nodes, p_prompt in parents:
            out = p.output_tokens.estimate_max()
            if ref.what == "parents" or (ref.what == "parent" and ref.arg == p.name):
                n += nodes * p.fanout * out
            elif ref.what == "history":
                n += nodes * p.fanout * (p_prompt + out + 1)
    return n


def _no_calls(inp: StageInputs) -> list[Call]:
    return []


def _cut(text: str, limit: int = 60) -> str:
    """Text from the file for a message: on one line (escaped where it is not plain
    printable text), and short."""
    if not text.isprintable():
        text = repr(text)[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _literal_int(text: str) -> Any:
    """A placeholder's number: an integer literal, or a $param left for _int to resolve."""
    text = text.strip()
    if text.startswith("$") or not text.isascii() or not text.lstrip("+-").isdigit():
        return text
    try:
        return int(text)
    except ValueError:  # more digits than int() converts
        return text


def _table(d: dict[str, Any], key: str) -> dict[str, Any]:
    v = d.get(key, {})
    if not isinstance(v, dict):
        raise _Bad(f"{key}: must be a table ([{key}])")
    return v


def _known(d: dict[str, Any], fields: tuple[str, ...], where: str) -> None:
    for key in d:
        if key not in fields:
            prefix = f"{where}." if where else ""
            raise _Bad(f"{prefix}{_cut(key)}: unknown field (known: {', '.join(fields)})")
