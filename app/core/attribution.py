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

Several endpoints (the openai engine over a fleet): a device that serves some of them
only (a remote GPU read by the dcgm or prometheus meter, mapped by `map_endpoints`)
splits its energy among the requests served by those endpoints alone; when none of
them worked in an interval, that energy is its node's idle energy (`idle_by_node_j`).
A node's CPU and DRAM serve the endpoints its GPUs serve. Devices mapped to no endpoint
(local meters) are shared by every request as above.

Bookkeeping holds exactly: for every component, idle + the sum over requests equals
the counter difference between the first and last reading. A request's share of the
interval in which it finished is known only at the device's next reading, so the
finish queue (app/core/request_life.py) asks `ready_before()` before it publishes a
finished request with its energy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from app.core.events import Sample

DEFAULT_PREFILL_WEIGHT = 0.15


@dataclass(slots=True)
class _Device:
    component: str
    last_energy_mj: float
    last_t_s: float
    first_energy_mj: float
    pending: dict[str, float] = field(default_factory=dict)  # request id -> work
    endpoints: frozenset[str] | None = None  # serves these endpoints only; None: all
    node: str = ""


def _netloc(url: str) -> tuple[str, str]:
    """(host:port, host) of a URL, without credentials."""
    loc = urlsplit(url).netloc.rsplit("@", 1)[-1]
    return loc, loc.rsplit(":", 1)[0] if ":" in loc else loc


def endpoint_map(endpoints: Iterable[dict[str, Any]], devices: Iterable[dict[str, Any]]
                 ) -> dict[str, tuple[str, frozenset[str]]]:
    """Device -> (its node, the endpoints it serves), for remote devices that serve some.

    An endpoint's devices are those it names (`devices`: device ids or node names, from
    an endpoints file), else the devices read from the same HOST:PORT (`wattflow serve`
    has both on one port), else those whose node is the endpoint's name, else those of
    the same host (vLLM on :8000, dcgm-exporter on :9400). A node's CPU and DRAM serve
    what its GPUs serve."""
    devs = [d for d in devices if d.get("node")]
    serves: dict[str, set[str]] = defaultdict(set)
    for e in endpoints:
        name, url = str(e.get("name", "")), str(e.get("url", ""))
        named = e.get("devices")
        if isinstance(named, list) and named:
            hits = [d for d in devs if d["device"] in named or d["node"] in named]
        else:
            loc, host = _netloc(url)
            gpus = [d for d in devs if d.get("component") == "gpu"]
            hits = [d for d in gpus if (d.get("labels") or {}).get("instance") == loc]
            hits = hits or [d for d in gpus if d["node"] == name]
            hits = hits or [d for d in gpus if d["node"] == host or _netloc(
                "//" + str((d.get("labels") or {}).get("instance", "")))[1] == host]
        for d in hits:
            serves[d["device"]].add(name)
    by_node: dict[str, set[str]] = defaultdict(set)
    for d in devs:
        if d["device"] in serves:
            by_node[d["node"]] |= serves[d["device"]]
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for d in devs:
        eps = serves.get(d["device"]) or (by_node.get(d["node"]) if d.get("component") != "gpu"
                                          else None)
        if eps:
            out[d["device"]] = (d["node"], frozenset(eps))
    return out


class EnergyAttributor:
    def __init__(self, prefill_weight: float = DEFAULT_PREFILL_WEIGHT) -> None:
        self.prefill_weight = prefill_weight
        self._devices: dict[str, _Device] = {}
        self._pendings: list[dict[str, float]] = []  # each device's `pending`, for on_work
        # Devices that serve some endpoints only (map_endpoints): device -> (node, them).
        self._device_map: dict[str, tuple[str, frozenset[str]]] = {}
        self._endpoint_of: dict[str, str] = {}  # request id -> its endpoint, when known
        # endpoint (None: unknown) -> the pendings of the devices that take its work
        self._routes: dict[str | None, list[dict[str, float]]] = {}
        self.idle_by_node_j: dict[str, float] = defaultdict(float)
        self._energy: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.idle_j: dict[str, float] = defaultdict(float)
        # requests inside the engine -> weight while no work is reported (prompt tokens
        # until the first token, then 1)
        self._in_engine: dict[str, float] = {}
        self.attributed_j: dict[str, float] = defaultdict(float)

    @property
    def has_energy(self) -> bool:
        return bool(self._devices)

    def map_endpoints(self, engine_details: dict[str, Any],
                      meters: Iterable[dict[str, Any]]) -> dict[str, tuple[str, frozenset[str]]]:
        """Restrict remote devices to the endpoints they serve (see `endpoint_map`), from
        the engine's `details.endpoints` and the meters' device infos (as dicts). Call
        before the first sample. Returns the mapping (empty: one endpoint, or no remote
        device)."""
        endpoints = engine_details.get("endpoints") or []
        devices = [d for m in meters for d in m.get("devices") or []]
        self._device_map = endpoint_map(endpoints, devices) if len(endpoints) > 1 else {}
        return self._device_map

    def on_endpoint(self, request_id: str, endpoint: str) -> None:
        """The request went to `endpoint` (again on a failover)."""
        if self._device_map:
            self._endpoint_of[request_id] = endpoint

    def _route(self, endpoint: str | None) -> list[dict[str, float]]:
        route = self._routes.get(endpoint)
        if route is None:
            route = self._routes[endpoint] = [
                d.pending for d in self._devices.values()
                if d.endpoints is None or (endpoint is not None and endpoint in d.endpoints)]
        return route

    def on_admit(self, request_id: str, prompt_tokens: int) -> None:
        self._in_engine[request_id] = float(max(1, prompt_tokens))

    def on_done(self, request_id: str) -> None:
        self._in_engine.pop(request_id, None)
        if self._endpoint_of:
            self._endpoint_of.pop(request_id, None)

    def on_work(self, request_id: str, prefill_tokens: int, decode_tokens: int) -> None:
        work = decode_tokens + self.prefill_weight * prefill_tokens
        if work <= 0:
            return
        if decode_tokens:
            in_engine = self._in_engine
            if request_id in in_engine:
                in_engine[request_id] = 1.0
        pendings = (self._route(self._endpoint_of.get(request_id)) if self._device_map
                    else self._pendings)
        for pending in pendings:  # hot: once per token event
            pending[request_id] = pending.get(request_id, 0.0) + work

    def on_sample(self, s: Sample) -> None:
        if s.energy_mj is None:
            return
        dev = self._devices.get(s.device)
        if dev is None:
            dev = self._devices[s.device] = _Device(s.component, s.energy_mj, s.t_s,
                                                    s.energy_mj)
            mapped = self._device_map.get(s.device)
            if mapped is not None:
                dev.node, dev.endpoints = mapped
                self.idle_by_node_j[dev.node] += 0.0
            self._pendings.append(dev.pending)
            self._routes.clear()
            self.idle_j[s.component] += 0.0  # every measured component has an idle line
            self.attributed_j[s.component] += 0.0
            return
        delta_j = max(0.0, (s.energy_mj - dev.last_energy_mj) / 1000.0)
        dev.last_energy_mj = s.energy_mj
        dev.last_t_s = s.t_s
        shares = dev.pending if dev.pending else self._in_engine
        if not dev.pending and dev.endpoints is not None and shares:
            # Requests inside the engine but silent: only those its endpoints serve.
            eps, where = dev.endpoints, self._endpoint_of
            shares = {rid: w for rid, w in shares.items() if where.get(rid) in eps}
        total_work = sum(shares.values())
        if total_work <= 0:
            self.idle_j[dev.component] += delta_j
            if dev.endpoints is not None:
                self.idle_by_node_j[dev.node] += delta_j
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
