"""The fleet part of `wattflow report`: figures per endpoint (the openai engine over
several servers records each request's endpoint) and per node (meters that read remote
GPUs, dcgm and prometheus, name each device's node).

Per endpoint: requests finished and failed, output tokens, median TTFT and latency,
the energy attributed to its requests and J per output token. Per node: its GPUs, the
energy their counters measured over the session, the mean power, and the part of it
that was idle (no request of the node's endpoints working; with several endpoints).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.core.events import EndEvent, Event, RequestEvent, Sample, SessionHeader


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


@dataclass(slots=True)
class _Endpoint:
    finished: int = 0
    failed: int = 0
    output_tokens: int = 0
    energy_j: float = 0.0
    ttft_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _Device:
    node: str
    first_mj: float
    last_mj: float
    first_t: float
    last_t: float


class FleetCollector:
    """Fed every event of a session (after its header)."""

    def __init__(self, header: SessionHeader) -> None:
        self._endpoints: dict[str, _Endpoint] = {}
        self._devices: dict[str, _Device] = {}
        self._node_of: dict[str, str] = {}
        self._idle_by_node: dict[str, float] = {}
        for m in header.meters:
            for d in m.get("devices") or []:
                if isinstance(d, dict) and d.get("node"):
                    self._node_of[str(d.get("device"))] = str(d["node"])
        details = header.engine.get("details") or {}
        for e in details.get("endpoints") or []:
            if isinstance(e, dict) and e.get("name"):
                self._endpoints.setdefault(str(e["name"]), _Endpoint())

    def feed(self, ev: Event) -> None:
        if isinstance(ev, EndEvent):
            idle = ev.summary.get("idle_energy_by_node_j")
            if isinstance(idle, dict):
                self._idle_by_node = {str(k): float(v) for k, v in idle.items()
                                      if isinstance(v, int | float)}
            return
        if isinstance(ev, RequestEvent):
            if ev.endpoint is None or ev.phase not in ("finished", "failed"):
                return
            st = self._endpoints.setdefault(ev.endpoint, _Endpoint())
            if ev.energy_j:
                st.energy_j += sum(ev.energy_j.values())
            if ev.phase == "failed":
                st.failed += 1
                return
            st.finished += 1
            st.output_tokens += ev.output_tokens
            if ev.ttft_s is not None:
                st.ttft_s.append(ev.ttft_s)
            if ev.latency_s is not None:
                st.latency_s.append(ev.latency_s)
        elif isinstance(ev, Sample) and ev.component == "gpu" and ev.energy_mj is not None:
            node = self._node_of.get(ev.device)
            if node is None:
                if "/" not in ev.device:
                    return  # a local GPU: no node
                node = ev.device.split("/", 1)[0]
            d = self._devices.get(ev.device)
            if d is None:
                self._devices[ev.device] = _Device(node, ev.energy_mj, ev.energy_mj, ev.t_s,
                                                   ev.t_s)
            else:
                d.last_mj, d.last_t = ev.energy_mj, ev.t_s

    def endpoint_rows(self) -> list[dict[str, Any]]:
        out = []
        for name, st in self._endpoints.items():
            out.append({
                "endpoint": name,
                "requests_finished": st.finished,
                "requests_failed": st.failed,
                "output_tokens": st.output_tokens,
                "ttft_p50_s": _median(st.ttft_s),
                "latency_p50_s": _median(st.latency_s),
                "energy_j": st.energy_j if st.energy_j else None,
                "j_per_output_token": (st.energy_j / st.output_tokens
                                       if st.energy_j and st.output_tokens else None),
            })
        return out

    def node_rows(self) -> list[dict[str, Any]]:
        nodes: dict[str, list[_Device]] = {}
        for d in self._devices.values():
            nodes.setdefault(d.node, []).append(d)
        out = []
        for node, devs in nodes.items():
            energy = sum(max(0.0, d.last_mj - d.first_mj) for d in devs) / 1000.0
            span = max(d.last_t for d in devs) - min(d.first_t for d in devs)
            out.append({"node": node, "gpus": len(devs), "gpu_energy_j": energy,
                        "gpu_power_avg_w": energy / span if span > 0 else None,
                        "idle_energy_j": self._idle_by_node.get(node)})
        return out
