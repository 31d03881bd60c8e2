"""User-defined workflows from a TOML file (the format is documented in docs/workflows.md).

Everything is checked when the file is loaded, so a mistake is one line naming the file
and the field (`WorkloadError`) before any engine starts. A loaded file is a workload
like the built-in ones: each workflow expands the file's stages into DAG nodes (copies,
chains, fan-outs), draws its text and lengths from one seeded generator, and fills the
prompt templates from the parents' real outputs when the stage runs.
"""

from __future__ import annotations

import math
import random
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workloads import WorkloadError
from workloads.base import (
    Arrival,
    Call,
    CallResult,
    StageInputs,
    StageSpec,
    WorkflowSpec,
    topo_order,
)
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
    lo: int
    hi: int


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
    output_tokens: _Dist
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
                 shared: dict[str, Piece], stages: list[_Stage]) -> None:
        self.path = path
        self.name = name
        self._params = params
        self._arrival = arrival
        self.shared = shared
        self.stages = stages

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
        plans: list[_Plan] = []
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
                            n = seg.lo if seg.lo == seg.hi else r.randint(seg.lo, seg.hi)
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
                    plan.calls.append((parts, int(st.output_tokens.draw(r, whole=True))))
                plans.append(plan)
        said: dict[str, list[Piece]] = {}  # each node's prompts, for {history}
        specs = [StageSpec(node=pl.node, stage=pl.stage.label, deps=pl.deps,
                           calls=len(pl.calls), delay_s=pl.delay_s,
                           build=self._builder(pl, wid, by_name, said))
                 for pl in plans]
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
def load_toml_workload(path: str, params: dict[str, Any] | None = None) -> TomlWorkload:
    """Load and check a workflow file; any mistake is a WorkloadError of one line
    that names the file and the field."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise WorkloadError(f"{path}: no such file") from None
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise WorkloadError(f"{path}: not valid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise WorkloadError(f"{path}: not valid TOML: {exc}") from None
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
            raise _Bad(f"name: must be a word of letters, digits, '_', '.', '-', got {name!r}")
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
        stages = [self._stage(i, s, shared) for i, s in enumerate(raw_stages)]
        self._check_graph(stages)
        return TomlWorkload(self.path, name, self.params, arrival, shared, stages)

    # parameters --------------------------------------------------------------------
    def _params(self, table: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in table.items():
            if not isinstance(value, int | float | str | bool):
                raise _Bad(f"params.{key}: must be a number, string or boolean")
            out[key] = value
        for key, value in self.overrides.items():
            if key not in out:
                known = ", ".join(sorted(out)) or "none"
                raise _Bad(f"parameter {key!r} is not in the file's [params] (known: {known})")
            default = out[key]
            if isinstance(default, bool) != isinstance(value, bool) or (
                    isinstance(default, int | float) and not isinstance(value, int | float)):
                raise _Bad(f"parameter {key}: must be like its default {default!r}, got {value!r}")
            if isinstance(default, int) and not isinstance(default, bool) and \
                    isinstance(value, float):
                raise _Bad(f"parameter {key}: must be a whole number, got {value!r}")
            out[key] = value
        return out

    def _resolve(self, value: Any, where: str) -> Any:
        if isinstance(value, str) and value.startswith("$"):
            key = value[1:]
            if key not in self.params:
                raise _Bad(f"{where}: unknown parameter {value} (add it to [params])")
            return self.params[key]
        return value

    def _int(self, value: Any, where: str, least: int) -> int:
        v = self._resolve(value, where)
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad(f"{where}: must be a whole number, got {v!r}")
        if v < least:
            raise _Bad(f"{where}: must be at least {least}, got {v}")
        return v

    def _num(self, value: Any, where: str, positive: bool = False) -> float:
        v = self._resolve(value, where)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise _Bad(f"{where}: must be a number, got {v!r}")
        if v < 0 or (positive and v == 0):
            raise _Bad(f"{where}: must be {'positive' if positive else 'at least 0'}, got {v}")
        return float(v)

    def _bool(self, value: Any, where: str) -> bool:
        v = self._resolve(value, where)
        if not isinstance(v, bool):
            raise _Bad(f"{where}: must be true or false, got {v!r}")
        return v

    def _dist(self, value: Any, where: str, whole: bool, least: float) -> _Dist:
        def one(x: Any, w: str) -> float:
            return float(self._int(x, w, int(least))) if whole else self._num(x, w)

        v = self._resolve(value, where)
        if isinstance(v, list):
            if len(v) != 2:
                raise _Bad(f"{where}: a range is [min, max], got {len(v)} values")
            lo, hi = one(v[0], where), one(v[1], where)
            if hi < lo:
                raise _Bad(f"{where}: range [min, max] has max {hi:g} below min {lo:g}")
            return _Dist(lo, hi)
        if isinstance(v, dict):
            _known(v, ("mean",), where)
            if "mean" not in v:
                raise _Bad(f"{where}: an exponential draw is {{ mean = SECONDS }}")
            return _Dist(self._num(v["mean"], f"{where}.mean"), 0.0, exp=True)
        x = one(v, where)
        return _Dist(x, x)

    # sections ----------------------------------------------------------------------
    def _arrival(self, table: dict[str, Any]) -> Arrival:
        _known(table, ARRIVAL_FIELDS, "arrival")
        rate = self._num(table["rate"], "arrival.rate", positive=True) if "rate" in table else None
        conc = self._int(table.get("concurrency", 1), "arrival.concurrency", 1)
        return Arrival(rate_per_s=rate, concurrency=conc)

    def _shared(self, table: dict[str, Any]) -> dict[str, Piece]:
        out: dict[str, Piece] = {}
        for key, spec in table.items():
            where = f"shared.{key}"
            if not _NAME.match(key):
                raise _Bad(f"{where}: a shared text's name is a word, got {key!r}")
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
                n = self._int(spec["tokens"], f"{where}.tokens", 1)
                # The same text for every workflow and run: seeded by the name alone.
                out[key] = Piece(passage(n, random.Random(f"shared.{key}")), n)
        return out

    def _stage(self, i: int, s: dict[str, Any], shared: dict[str, Piece]) -> _Stage:
        raw_name = s.get("name")
        where = f"stage[{i}]" if not isinstance(raw_name, str) else f"stage '{raw_name}'"
        _known(s, STAGE_FIELDS, where)
        if raw_name is None:
            raise _Bad(f"{where}.name: missing (every stage needs a name)")
        if not isinstance(raw_name, str) or not _NAME.match(raw_name):
            raise _Bad(f"{where}.name: must be a word of letters, digits, '_', '.', '-',"
                       f" got {raw_name!r}")
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
        chain = self._bool(s.get("chain", False), f"{where}.chain")
        per_copy = self._bool(s.get("per_copy", False), f"{where}.per_copy")
        if chain and per_copy:
            raise _Bad(f"{where}.per_copy: cannot be combined with chain")
        prob = self._num(s.get("probability", 1.0), f"{where}.probability")
        if prob > 1:
            raise _Bad(f"{where}.probability: must be between 0 and 1, got {prob:g}")
        if "output_tokens" not in s:
            raise _Bad(f"{where}.output_tokens: missing (tokens each call generates)")
        return _Stage(
            name=raw_name, label=label, after=list(after),
            copies=self._int(s.get("copies", 1), f"{where}.copies", 1),
            suffixed="copies" in s, chain=chain, per_copy=per_copy,
            fanout=self._int(s.get("fanout", 1), f"{where}.fanout", 1),
            prompt=self._template(s["prompt"], f"{where}.prompt", after, shared),
            output_tokens=self._dist(s["output_tokens"], f"{where}.output_tokens", True, 1),
            delay_s=self._dist(s.get("delay_s", 0), f"{where}.delay_s", False, 0),
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
                raise _Bad(f"{where}: unmatched '{tok}' at character {m.start()}"
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
        here = f"{where} {{{body}}}"
        if what == "passage":
            lo_s, dots, hi_s = arg.partition("..")
            lo = self._int(_literal_int(lo_s), here, 1)
            hi = self._int(_literal_int(hi_s), here, 1) if dots else lo
            if hi < lo:
                raise _Bad(f"{here}: range has max {hi} below min {lo}")
            return _Passage(lo, hi)
        if what in ("parents", "history", "copy", "call", "index") and not arg:
            if what == "history" and not after:
                raise _Bad(f"{here}: the stage has no parents (set after)")
            return _Ref(what)
        if what == "parent" and arg:
            if arg not in after:
                raise _Bad(f"{here}: {arg!r} is not in this stage's after list")
            return _Ref("parent", arg)
        if what == "shared" and arg:
            if arg not in shared:
                raise _Bad(f"{here}: no [shared.{arg}] table")
            return _Ref("shared", arg)
        raise _Bad(f"{here}: unknown placeholder (use passage:N, passage:MIN..MAX, parents,"
                   " parent:NAME, history, shared:NAME, copy, call, index)")

    def _check_graph(self, stages: list[_Stage]) -> None:
        by_name: dict[str, _Stage] = {}
        for st in stages:
            if st.name in by_name:
                raise _Bad(f"stage '{st.name}'.name: two stages have this name")
            by_name[st.name] = st
        for st in stages:
            for a in st.after:
                if a not in by_name:
                    raise _Bad(f"stage '{st.name}'.after: no stage named {a!r}")
                parent = by_name[a]
                if st.per_copy and not parent.chain and parent.copies != st.copies:
                    raise _Bad(f"stage '{st.name}'.per_copy: {st.copies} copies but stage"
                               f" '{a}' has {parent.copies}")
        skeleton = [StageSpec(node=st.name, stage=st.label, build=_no_calls,
                              deps=tuple(st.after)) for st in stages]
        try:
            topo_order(skeleton)
        except ValueError as exc:
            cyclic = str(exc).split(": ", 1)[-1].split(" -> ")[0]
            raise _Bad(f"stage '{cyclic}'.after: {exc}") from None


def _no_calls(inp: StageInputs) -> list[Call]:
    return []


def _literal_int(text: str) -> Any:
    """A placeholder's number: an integer literal, or a $param left for _int to resolve."""
    text = text.strip()
    if text.startswith("$"):
        return text
    try:
        return int(text)
    except ValueError:
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
            raise _Bad(f"{prefix}{key}: unknown field (known: {', '.join(fields)})")
