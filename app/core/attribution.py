"""Energy per request (and so per stage and per workflow).

Method. Every meter device with an energy counter (a GPU, a CPU package, a DRAM
domain) is read at intervals. The energy a device used between two of its readings
is split among the requests that processed tokens in that interval, in proportion to
their *work*: `decode_tokens + prefill_weight * prefill_tokens`. Engines report a
prompt's prefill only when its first token appears, so an interval in which requests
were inside the engine but none reported a token (a long prompt being prefilled) is
split among those requests by the prompt tokens still waiting for a first token.
A prefill token is cheaper than a decode token because prefill is compute-bound and
batched across the whole prompt, while each decode step re-reads the weights and the
KV cache; the default weight (0.15) is the ratio of J/token between prefill-heavy and
decode-heavy batches of an 8B model on an H100 (and is a run option). An interval with no request
inside the engine is *idle* energy, kept as its own line per component.

Bookkeeping holds exactly: for every component, idle + the sum over requests equals
the counter difference between the first and last reading. A request's share of the
interval in which it finished is known only at the device's next reading, so the
finish queue (app/core/request_life.py) asks `ready_before()` before it publishes a
finished request with its energy.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from app.core.events import Sample

DEFAULT_PREFILL_WEIGHT = 0.15


@dataclass(slots=True)
class _Device:
    component: str
    last_energy_mj: float
    last_t_s: float
    first_energy_mj: float
    pending: dict[str, float] = field(default_factory=dict)  # request id -> work


class EnergyAttributor:
    def __init__(self, prefill_weight: float = DEFAULT_PREFILL_WEIGHT) -> None:
        self.prefill_weight = prefill_weight
        self._devices: dict[str, _Device] = {}
        self._pendings: list[dict[str, float]] = []  # each device's `pending`, for on_work
        self._energy: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.idle_j: dict[str, float] = defaultdict(float)
        # requests inside the engine -> weight while no work is reported (prompt tokens
        # until the first token, then 1)
        self._in_engine: dict[str, float] = {}
        self.attributed_j: dict[str, float] = defaultdict(float)

    @property
    def has_energy(self) -> bool:
        return bool(self._devices)

    def on_admit(self, request_id: str, prompt_tokens: int) -> None:
        self._in_engine[request_id] = float(max(1, prompt_tokens))

    def on_done(self, request_id: str) -> None:
        self._in_engine.pop(request_id, None)

    def on_work(self, request_id: str, prefill_tokens: int, decode_tokens: int) -> None:
        work = decode_tokens + self.prefill_weight * prefill_tokens
        if work <= 0:
            return
        if decode_tokens:
            in_engine = self._in_engine
            if request_id in in_engine:
                in_engine[request_id] = 1.0
        for pending in self._pendings:  # hot: once per token event
            pending[request_id] = pending.get(request_id, 0.0) + work

    def on_sample(self, s: Sample) -> None:
        if s.energy_mj is None:
            return
        dev = self._devices.get(s.device)
        if dev is None:
            dev = self._devices[s.device] = _Device(s.component, s.energy_mj, s.t_s,
                                                    s.energy_mj)
            self._pendings.append(dev.pending)
            self.idle_j[s.component] += 0.0  # every measured component has an idle line
            self.attributed_j[s.component] += 0.0
            return
        delta_j = max(0.0, (s.energy_mj - dev.last_energy_mj) / 1000.0)
        dev.last_energy_mj = s.energy_mj
        dev.last_t_s = s.t_s
        shares = dev.pending if dev.pending else self._in_engine
        total_work = sum(shares.values())
        if total_work <= 0:
            self.idle_j[dev.component] += delta_j
        else:
            comp, energy = dev.component, self._energy
            attributed = self.attributed_j[comp]  # summed in the same order as before
            for rid, work in shares.items():
                share = delta_j * work / total_work
                energy[rid][comp] += share
                attributed += share
            self.attributed_j[comp] = attributed
        dev.pending.clear()

    def ready_before(self, t_s: float) -> bool:
        """True once every device has a reading after `t_s`, i.e. all energy of work
        done up to `t_s` has been attributed (work reported at the same instant as a
        reading belongs to the next interval)."""
        return all(d.last_t_s > t_s for d in self._devices.values())

    def take(self, request_id: str) -> dict[str, float]:
        """The request's energy per component, J; forgets it."""
        return dict(self._energy.pop(request_id, {}))

    def measured_j(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for d in self._devices.values():
            out[d.component] += (d.last_energy_mj - d.first_energy_mj) / 1000.0
        return dict(out)
