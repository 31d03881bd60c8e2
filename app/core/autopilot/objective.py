"""A latency objective: `ttft_p90=2s,tpot_p90=80ms`, overall or per stage.

Each target is `[STAGE:]METRIC_pNN=LIMIT`:
- METRIC: `ttft` (time to first token), `tpot` (time per output token after the first),
  `latency` (one request, submitted to finished), `workflow` (one workflow end to end);
- pNN: the quantile, p50 to p99.9 (`p90`, `p99`, `p99.9`);
- LIMIT: a duration, `2s`, `80ms`, `1.5` (seconds), `1m`;
- STAGE (optional): only requests of that stage (the stage label of the workload's DAG),
  e.g. `summarize:ttft_p90=3s`. Without it, every request counts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

METRICS = ("ttft", "tpot", "latency", "workflow")


class AutopilotError(ValueError):
    """A bad objective, bound or parameter; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Target:
    metric: str  # one of METRICS
    quantile: float  # 0.9 for p90
    limit_s: float
    stage: str | None = None

    @property
    def name(self) -> str:
        q = f"{self.quantile * 100:.6g}"
        base = f"{self.metric}_p{q}"
        return f"{self.stage}:{base}" if self.stage else base

    def text(self) -> str:
        return f"{self.name}={format_duration(self.limit_s)}"


@dataclass(frozen=True, slots=True)
class Objective:
    targets: tuple[Target, ...]

    def text(self) -> str:
        return ",".join(t.text() for t in self.targets)


_TARGET = re.compile(r"^(?:(?P<stage>[^:=\s]+):)?(?P<metric>[A-Za-z]+)_[pP](?P<q>\d+(?:\.\d+)?)$")
_DURATION = re.compile(r"^(?P<v>\d+(?:\.\d*)?|\.\d+)\s*(?P<u>ms|s|m|min)?$")


def parse_duration(text: str) -> float:
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise AutopilotError(f"{text!r} is not a duration (e.g. 2s, 80ms, 1.5)")
    v = float(m.group("v"))
    unit = m.group("u") or "s"
    return v / 1000.0 if unit == "ms" else v * 60.0 if unit in ("m", "min") else v


def format_duration(s: float) -> str:
    return f"{s * 1000:.4g}ms" if s < 1.0 else f"{s:.4g}s"


def stage_list(labels: Sequence[str], most: int = 12) -> str:
    """Stage labels for a one-line message: the first `most`, then `...`."""
    return ", ".join(labels[:most]) + (", ..." if len(labels) > most else "")


def parse_objective(text: str) -> Objective:
    """`ttft_p90=2s,tpot_p90=80ms` -> Objective; AutopilotError (one line) if bad."""
    if not text or not text.strip():
        raise AutopilotError("the objective is empty: give e.g. ttft_p90=2s,tpot_p90=80ms")
    targets: list[Target] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq:
            raise AutopilotError(f"objective {part!r}: expected METRIC_pNN=LIMIT, e.g. ttft_p90=2s")
        m = _TARGET.match(key.strip())
        if not m:
            raise AutopilotError(f"objective {key.strip()!r}: expected METRIC_pNN such as "
                                 f"ttft_p90 (metrics: {', '.join(METRICS)})")
        metric = m.group("metric").lower()
        if metric not in METRICS:
            raise AutopilotError(f"objective {key.strip()!r}: unknown metric {metric!r} "
                                 f"(metrics: {', '.join(METRICS)})")
        q = float(m.group("q")) / 100.0
        if not 0.5 <= q < 1.0:
            raise AutopilotError(f"objective {key.strip()!r}: the quantile must be p50 to p99.9")
        limit = parse_duration(value)
        if limit <= 0:
            raise AutopilotError(f"objective {key.strip()!r}: the limit must be more than 0")
        stage = m.group("stage")
        if stage is not None and metric == "workflow":
            # A workflow spans every stage: counted per stage it would silently be the
            # whole workflow's latency under a stage's name.
            raise AutopilotError(f"objective {key.strip()!r}: a workflow runs end to end "
                                 "through its stages; a stage prefix applies to ttft, tpot "
                                 "and latency")
        target = Target(metric, q, limit, stage)
        if any(t.name == target.name for t in targets):
            raise AutopilotError(f"objective {target.name} is given twice")
        targets.append(target)
    if not targets:
        raise AutopilotError("the objective is empty: give e.g. ttft_p90=2s,tpot_p90=80ms")
    return Objective(tuple(targets))
