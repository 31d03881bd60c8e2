"""An objective's stages checked against the workload before the run starts.

A target such as `summarise:ttft_p90=3s` counts only requests of that stage; a stage the
workload never runs leaves the autopilot with nothing to judge for the whole run (it
says so at its first decision, ~40 s in). Built-in workloads and workflow files declare
their stages per workflow (a composite mixes kinds, an agentic project varies its
agents), so the check draws workflows from the workload, as the run will, until every
stage the objective names has been seen, up to a bound: cheap when the names are right
(the first few workflows), about a second on the error path.
"""

from __future__ import annotations

import difflib
import random
import time

from app.core.autopilot.objective import AutopilotError, Objective, stage_list
from workloads.base import Workload

#: Workflows drawn before a stage is called missing: a stage in fewer than one workflow
#: in a few hundred would not give the autopilot a quantile in any epoch anyway.
MAX_WORKFLOWS = 2000
MAX_SECONDS = 2.0  # a workload whose workflows are slow to draw is checked on fewer


def workload_stages(workload: Workload, seed: int, wanted: set[str],
                    max_workflows: int = MAX_WORKFLOWS, max_s: float = MAX_SECONDS
                    ) -> tuple[set[str], int] | None:
    """The stage labels of workflows drawn from `workload` (stopping once every stage in
    `wanted` is seen), and how many were drawn; None when a workflow cannot be drawn
    here (the run reports that itself)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    deadline = time.perf_counter() + max_s
    n = 0
    while n < max_workflows and not wanted <= seen:
        try:
            spec = workload.workflow(n, random.Random(rng.random()))
        except Exception:  # the run itself reports a workload that fails
            return None
        seen.update(s.stage for s in spec.stages)
        n += 1
        if time.perf_counter() > deadline:
            break
    return seen, n


def check_stages(objective: Objective, workload: Workload, seed: int = 0) -> None:
    """AutopilotError (one line) when a target names a stage no drawn workflow has."""
    wanted = {t.stage for t in objective.targets if t.stage is not None}
    if not wanted:
        return
    found = workload_stages(workload, seed, wanted)
    if found is None:
        return
    seen, drawn = found
    missing = [t for t in objective.targets if t.stage is not None and t.stage not in seen]
    if not missing:
        return
    t = missing[0]
    assert t.stage is not None
    shown = sorted(seen)
    close = difflib.get_close_matches(t.stage, shown, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise AutopilotError(f"objective {t.name}: no workflow of workload {workload.name!r} has "
                         f"a stage '{t.stage}' ({drawn} drawn; its stages: "
                         f"{stage_list(shown)}){hint}")
