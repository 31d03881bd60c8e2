"""Two sessions' statistics side by side: per stage and for the whole run, B's figure
minus A's, and relative to A's, for the figures a comparison is about (J/token, tok/s,
p90 latency, joules).

One function makes the numbers for every view of a comparison: `wattflow report A B`
(its table and `--json`) and the two-session replay, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.core.stats import StageStats, StatsSnapshot

#: The row of the whole run, after the stages' rows.
RUN_ROW = "(whole run)"


@dataclass(frozen=True, slots=True)
class Metric:
    key: str  # the JSON key
    title: str  # a column title
    lower_is_better: bool
    digits: int  # decimals when shown


#: The compared figures, in column order. Per stage: J/token is the stage's attributed
#: energy per output token of its finished requests; tok/s its finished requests'
#: output tokens over the session's duration (as the whole run's tok/s is); p90 latency
#: that of its finished requests; joules the energy attributed to them. For the whole
#: run: all measured energy per output token, tok/s, p90 latency and total energy.
METRICS: tuple[Metric, ...] = (
    Metric("j_per_output_token", "J/token", True, 4),
    Metric("tokens_per_s", "tok/s", False, 1),
    Metric("latency_p90_s", "p90 s", True, 3),
    Metric("energy_j", "joules", True, 1),
)


@dataclass(frozen=True, slots=True)
class Difference:
    a: float | None
    b: float | None

    @property
    def diff(self) -> float | None:
        """B minus A; None when either is missing."""
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def relative(self) -> float | None:
        """(B - A) / A; None when A is missing or zero."""
        d = self.diff
        return None if d is None or not self.a else d / abs(self.a)

    def better(self, metric: Metric) -> bool | None:
        """Whether B is better than A for this figure; None: equal, or not comparable."""
        d = self.diff
        if d is None or d == 0:
            return None
        return (d < 0) == metric.lower_is_better

    def to_dict(self, metric: Metric) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "diff": self.diff, "relative": self.relative,
                "better": self.better(metric)}


@dataclass(frozen=True, slots=True)
class DifferenceRow:
    stage: str  # a stage label, or RUN_ROW
    figures: dict[str, Difference] = field(default_factory=dict)  # by Metric.key
    in_a: bool = True  # the stage has requests in A (finished or not)
    in_b: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "in_a": self.in_a, "in_b": self.in_b,
                **{m.key: self.figures[m.key].to_dict(m) for m in METRICS}}

    @property
    def label(self) -> str:
        """The stage, saying when only one session has it."""
        if not self.in_a:
            return f"{self.stage} (B only)"
        return self.stage if self.in_b else f"{self.stage} (A only)"


def _stage_figures(s: StatsSnapshot, st: StageStats | None) -> dict[str, float | None]:
    if st is None:
        return dict.fromkeys((m.key for m in METRICS), None)
    measured = bool(s.energy_j)
    return {
        "j_per_output_token": st.j_per_output_token,
        "tokens_per_s": st.output_tokens / s.duration_s if s.duration_s > 0 else None,
        "latency_p90_s": st.latency_p90_s,
        "energy_j": st.energy_j if measured else None,
    }


def _run_figures(s: StatsSnapshot) -> dict[str, float | None]:
    return {
        "j_per_output_token": s.j_per_output_token,
        "tokens_per_s": s.tokens_per_s,
        "latency_p90_s": s.latency_p90_s,
        "energy_j": s.energy_total_j if s.energy_j else None,
    }


def differences(a: StatsSnapshot, b: StatsSnapshot) -> list[DifferenceRow]:
    """One row per stage of either session (A's order, then B's new stages), then the
    whole run's row."""
    a_st = {st.stage: st for st in a.stages}
    b_st = {st.stage: st for st in b.stages}
    names = list(a_st) + [n for n in b_st if n not in a_st]
    rows = []
    for name in names:
        fa, fb = _stage_figures(a, a_st.get(name)), _stage_figures(b, b_st.get(name))
        rows.append(DifferenceRow(name, {m.key: Difference(fa[m.key], fb[m.key])
                                         for m in METRICS}, name in a_st, name in b_st))
    fa, fb = _run_figures(a), _run_figures(b)
    rows.append(DifferenceRow(RUN_ROW, {m.key: Difference(fa[m.key], fb[m.key])
                                        for m in METRICS}))
    return rows


def signed(x: float | None, digits: int) -> str:
    """A difference with its sign always shown: `+0.0123`, `-4.5`, `0`; `-` if none."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:+,.{digits}f}"


def signed_pct(x: float | None) -> str:
    return "" if x is None else f"{x * 100:+.1f}%"


def format_difference(d: Difference, metric: Metric) -> str:
    """`+0.0123 (+4.5%)`: B minus A, and relative to A when A is not zero."""
    text = signed(d.diff, metric.digits)
    pct = signed_pct(d.relative)
    return f"{text} ({pct})" if pct and d.diff else text
