"""A fake of what the autopilot measures: a scripted "plant" that turns the knobs in
force into the events a run would publish (GPU energy samples, the engine's token
counter, finished requests with TTFT and TPOT), one second at a time, and a fake knob
path that records every change the autopilot makes.

`model(knobs, t)` returns (J/token, TTFT seconds, TPOT seconds, tokens per second): the
plant's truth at that setting. Latencies are spread by a seeded +-`spread` factor and
J/token by `noise` (a factor drawn anew every `noise_period_s`), so quantiles and noise
estimates have something to do.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from app.core import knobs as knobmod
from app.core.events import EngineStateEvent, Event, KnobEvent, RequestEvent, Sample

Truth = tuple[float, float, float, float]  # J/token, TTFT s, TPOT s, tokens/s


@dataclass
class FakeKnobPath:
    """The runner's knob path, faked: bounds per knob, every set_knob recorded and
    echoed as a knob event to `listener`."""

    knobs: dict[str, float | None] = field(default_factory=dict)
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    changes: list[tuple[float, str, float | None, str, str | None]] = field(default_factory=list)
    listener: Callable[[Event], None] | None = None
    now: float = 0.0

    def set_knob(self, name: str, value: float | None, source: str = "cli",
                 reason: str | None = None) -> None:
        v = knobmod.validate(name, value, self.bounds.get(name))
        previous = self.knobs.get(name)
        self.knobs[name] = v
        self.changes.append((self.now, name, v, source, reason))
        if self.listener is not None:
            self.listener(KnobEvent(t_s=self.now, knob=name, value=v, previous=previous,
                                    requested=v, source=source, reason=reason))

    def knob_bounds(self, name: str) -> tuple[float, float] | None:
        return self.bounds.get(name)

    def knob_available(self, name: str) -> str | None:
        return self.unavailable.get(name)

    def limit_in_force(self, name: str) -> float | None:
        return self.bounds.get(name, (0.0, 700.0))[1] if name == "power_cap" else None


@dataclass
class FakePlant:
    model: Callable[[dict[str, float | None], float], Truth]
    seed: int = 0
    requests_per_s: int = 4
    spread: float = 0.2
    noise: float = 0.0
    noise_period_s: float = 1.0  # J/token's noise is drawn anew this often
    queue_frac: float = 0.0  # of TTFT, the share spent waiting for admission
    energy_j: float = 0.0
    tokens: float = 0.0
    _n: int = 0
    _noise_f: float = 1.0
    _noise_t: float = -1e9
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def second(self, t: float, knobs: dict[str, float | None]) -> list[Event]:
        """The events of the second ending at `t`."""
        jpt, ttft, tpot, tps = self.model(knobs, t)
        if t - self._noise_t >= self.noise_period_s:
            self._noise_f, self._noise_t = 1.0 + self.noise * (2 * self.rng.random() - 1), t
        jpt *= self._noise_f
        self.tokens += tps
        self.energy_j += jpt * tps
        out: list[Event] = [
            Sample(t_s=t, meter="fake", device="gpu0", component="gpu",
                   energy_mj=self.energy_j * 1000.0),
            EngineStateEvent(t_s=t, source="engine", output_tokens_total=int(self.tokens)),
        ]
        for _ in range(self.requests_per_s):
            self._n += 1
            f = 1.0 + self.spread * (2 * self.rng.random() - 1)
            out.append(RequestEvent(t_s=t, request_id=f"r{self._n}", phase="first_token",
                                    stage="chat", ttft_s=ttft * f))
            out.append(RequestEvent(t_s=t, request_id=f"r{self._n}", phase="finished",
                                    stage="chat", output_tokens=int(tps / self.requests_per_s),
                                    ttft_s=ttft * f, tpot_s=tpot * f, latency_s=ttft * f + 1.0,
                                    queue_s=ttft * f * self.queue_frac))
        return out
