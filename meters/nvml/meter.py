"""NVIDIA GPUs through NVML (nvidia-ml-py, imported as `pynvml`).

Cost is the design constraint: a poller that read everything, the energy counter
included, cost 13-48% of a core on an H100 (REFERENCE.md). Every sample here reads
only cheap values (instant + average power as one field-values call, utilisation,
memory, SM clock, temperature, enforced limit: microseconds each); the energy counter
(milliseconds of CPU) is read once per `energy_interval_s`, and `energy.EnergyTracker`
fills the gaps from instant power, exact again at every counter read.

`pynvml` is imported inside `open()` so tests can put a fake in `sys.modules`.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.core.events import Sample
from app.core.options import OptionSchema, option
from meters.base import DeviceInfo, MeterInfo, MeterUnavailable, PowerCapError
from meters.nvml.energy import EnergyTracker

# The hardware refreshes power and energy about 10 times a second (REFERENCE.md):
# 20 Hz sees every value; faster polling only costs CPU.
DEFAULT_POLL_INTERVAL_S = 0.05
DEFAULT_ENERGY_INTERVAL_S = 1.0
FI_POWER_AVERAGE = 185  # NVML_FI_DEV_POWER_AVERAGE, mW
FI_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT, mW
_NVML_SUCCESS = 0
_CLOCK_SM = 1  # NVML_CLOCK_SM
_TEMPERATURE_GPU = 0  # NVML_TEMPERATURE_GPU


def _field_number(fv: Any) -> float:
    """A field value's number, whatever NVML typed it as."""
    v = fv.value
    return float(
        {
            0: lambda: v.dVal,
            1: lambda: v.uiVal,
            2: lambda: v.ulVal,
            3: lambda: v.ullVal,
            4: lambda: v.sllVal,
            5: lambda: v.siVal,
        }.get(int(fv.valueType), lambda: v.uiVal)()
    )


@dataclass(slots=True)
class _Gpu:
    index: int
    device: str
    handle: Any
    name: str
    uuid: str
    energy: EnergyTracker
    fields: list[int]  # power field ids this GPU answers
    readers: dict[str, Callable[[Any], float]]  # cheap channels it answers
    limit_range_w: tuple[float, float] | None
    limit_w: float | None = None  # the enforced limit at the last read
    next_counter_t: float | None = None
    alive: bool = True
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class NvmlOptions:
    gpus: list[int] | None = option(None, "GPU indices to read (--gpus); unset: all")
    poll_interval_s: float = option(DEFAULT_POLL_INTERVAL_S, "read cheap channels this often "
                                    "(s)", lo=0, lo_open=True)
    energy_interval_s: float = option(DEFAULT_ENERGY_INTERVAL_S, "read the energy counter "
                                      "this often (s); 0: every sample", lo=0)


# The meters share one options dict: names for other meters are not errors here.
OPTIONS = OptionSchema.of(NvmlOptions, "nvml meter", shared=True)


class NvmlMeter:
    name = "nvml"
    # A real GPU's limit outlives the process: it needs permission and a guard.
    power_cap_persists = True

    def __init__(
        self,
        gpus: list[int] | None = None,
        *,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        energy_interval_s: float = DEFAULT_ENERGY_INTERVAL_S,
    ) -> None:
        if poll_interval_s <= 0 or not math.isfinite(poll_interval_s):
            raise ValueError(f"poll interval must be a positive number, got {poll_interval_s}")
        if energy_interval_s < 0 or not math.isfinite(energy_interval_s):
            raise ValueError(f"energy interval must be >= 0, got {energy_interval_s}")
        self._want = None if gpus is None else list(gpus)
        self.poll_interval_s = poll_interval_s
        self.energy_interval_s = energy_interval_s
        self._nvml: Any = None
        self._gpus: list[_Gpu] = []
        self._notes: list[str] = []
        # Filled by the poller thread, drained by the loop: deque appends are atomic.
        self._errors: deque[str] = deque()
        self._events: deque[str] = deque()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> NvmlMeter:
        o = OPTIONS.build(options)
        return cls(o.gpus, poll_interval_s=o.poll_interval_s,
                   energy_interval_s=o.energy_interval_s)

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        if self._nvml is not None:
            return  # already open (auto-detection opens meters it returns)
        try:
            import pynvml
        except ImportError:
            raise MeterUnavailable("nvml: nvidia-ml-py is not installed") from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise MeterUnavailable(f"nvml: no NVIDIA driver here ({exc})") from None
        except OSError as exc:  # a broken libnvidia-ml.so
            raise MeterUnavailable(f"nvml: cannot load the NVIDIA library ({exc})") from None
        try:
            self._gpus = self._discover(pynvml)
        except pynvml.NVMLError as exc:  # e.g. a GPU lost before the run began
            pynvml.nvmlShutdown()
            raise MeterUnavailable(f"nvml: cannot read the GPUs ({exc})") from None
        except BaseException:
            pynvml.nvmlShutdown()
            raise
        self._nvml = pynvml

    def _discover(self, nv: Any) -> list[_Gpu]:
        count = int(nv.nvmlDeviceGetCount())
        if count == 0:
            raise MeterUnavailable("nvml: the NVIDIA driver sees no GPUs")
        indices = list(range(count)) if self._want is None else self._want
        bad = [i for i in indices if not 0 <= i < count]
        if bad:
            raise MeterUnavailable(
                f"nvml: no GPU {', '.join(map(str, bad))} here "
                f"({count} GPU{'s' if count > 1 else ''}: 0-{count - 1})"
            )
        return [self._probe(nv, i) for i in dict.fromkeys(indices)]

    def _probe(self, nv: Any, index: int) -> _Gpu:
        """Find once which reads this GPU answers, so sampling never retries failures."""
        h = nv.nvmlDeviceGetHandleByIndex(index)
        device = f"gpu{index}"
        name = _text(nv.nvmlDeviceGetName(h))
        uuid = _text(nv.nvmlDeviceGetUUID(h))
        notes: list[str] = []
        try:
            nv.nvmlDeviceGetTotalEnergyConsumption(h)
            has_counter = True
        except nv.NVMLError:
            has_counter = False
            notes.append(f"{device}: no energy counter (pre-Volta?); energy integrated from power")
        fields: list[int] = []
        try:
            for fv in nv.nvmlDeviceGetFieldValues(h, [FI_POWER_INSTANT, FI_POWER_AVERAGE]):
                if int(fv.nvmlReturn) == _NVML_SUCCESS:
                    fields.append(int(fv.fieldId))
        except (nv.NVMLError, AttributeError):
            pass
        if FI_POWER_INSTANT not in fields:
            notes.append(f"{device}: no instant power field; power from nvmlDeviceGetPowerUsage")
        candidates: dict[str, Callable[[Any], float]] = {
            "util_pct": lambda hh: float(nv.nvmlDeviceGetUtilizationRates(hh).gpu),
            "mem_used_mib": lambda hh: nv.nvmlDeviceGetMemoryInfo(hh).used / 1048576.0,
            "sm_clock_mhz": lambda hh: float(nv.nvmlDeviceGetClockInfo(hh, _CLOCK_SM)),
            "temp_c": lambda hh: float(nv.nvmlDeviceGetTemperature(hh, _TEMPERATURE_GPU)),
            "power_limit_w": lambda hh: nv.nvmlDeviceGetEnforcedPowerLimit(hh) / 1000.0,
        }
        if FI_POWER_INSTANT not in fields:
            candidates["power_w"] = lambda hh: nv.nvmlDeviceGetPowerUsage(hh) / 1000.0
        readers: dict[str, Callable[[Any], float]] = {}
        for channel, read in candidates.items():
            try:
                read(h)
                readers[channel] = read
            except nv.NVMLError:
                notes.append(f"{device}: cannot read {channel} here")
        limit_range: tuple[float, float] | None
        try:
            lo, hi = nv.nvmlDeviceGetPowerManagementLimitConstraints(h)
            limit_range = (lo / 1000.0, hi / 1000.0)
        except nv.NVMLError:
            limit_range = None
        gpu = _Gpu(
            index=index,
            device=device,
            handle=h,
            name=name,
            uuid=uuid,
            energy=EnergyTracker(has_counter),
            fields=fields,
            readers=readers,
            limit_range_w=limit_range,
            notes=notes,
        )
        if "power_limit_w" in readers:
            gpu.limit_w = readers["power_limit_w"](h)
        return gpu

    def close(self) -> None:
        nv, self._nvml = self._nvml, None
        if nv is not None:
            # Shutting down a library that already lost the driver may fail: fine.
            with contextlib.suppress(nv.NVMLError):
                nv.nvmlShutdown()

    def info(self) -> MeterInfo:
        devices = []
        notes = list(self._notes)
        for g in self._gpus:
            channels = ["energy_mj", "power_w"]
            if FI_POWER_AVERAGE in g.fields:
                channels.append("power_avg_w")
            channels += [c for c in g.readers if c not in channels]
            devices.append(
                DeviceInfo(
                    device=g.device,
                    component="gpu",
                    name=g.name if g.alive else f"{g.name} (lost)",
                    channels=channels,
                    power_limit_range_w=g.limit_range_w,
                    power_limit_w=g.limit_w,
                )
            )
            notes += g.notes
        return MeterInfo(
            name=self.name,
            devices=devices,
            blocking=True,
            poll_interval_s=self.poll_interval_s,
            notes=notes,
        )

    # -- reading ---------------------------------------------------------------------
    def sample(self, t_s: float, *, exact: bool = False) -> list[Sample]:
        """One reading of every live GPU. `exact=True` forces an energy-counter read
        (use it for the last sample of a run so its total is the counter's)."""
        nv = self._nvml
        if nv is None:
            raise RuntimeError("nvml meter sampled before open()")
        out = []
        for g in self._gpus:
            if not g.alive:
                continue
            try:
                out.append(self._sample_gpu(nv, g, t_s, exact))
            except nv.NVMLError as exc:
                # One GPU failing (lost, reset, fell off the bus) must not end the run.
                g.alive = False
                self._errors.append(f"{g.device} ({g.name}): {exc}; no longer read")
        return out

    def sample_final(self, t_s: float) -> list[Sample]:
        """The run's last reading: the energy counter is read, so totals are exact."""
        return self.sample(t_s, exact=True)

    def _sample_gpu(self, nv: Any, g: _Gpu, t_s: float, exact: bool) -> Sample:
        s = Sample(t_s=t_s, meter=self.name, device=g.device, component="gpu")
        if g.fields:
            for fv in nv.nvmlDeviceGetFieldValues(g.handle, g.fields):
                if int(fv.nvmlReturn) != _NVML_SUCCESS:
                    continue  # this one read missed; the next sample will have it
                watts = _field_number(fv) / 1000.0
                if int(fv.fieldId) == FI_POWER_INSTANT:
                    s.power_w = watts
                else:
                    s.power_avg_w = watts
        for channel, read in g.readers.items():
            setattr(s, channel, read(g.handle))
        if s.power_limit_w is not None:
            g.limit_w = s.power_limit_w
        g.energy.add_power(t_s, s.power_w)
        if g.energy.has_counter and (exact or g.next_counter_t is None or t_s >= g.next_counter_t):
            note = g.energy.add_counter(int(nv.nvmlDeviceGetTotalEnergyConsumption(g.handle)))
            if note:
                self._events.append(f"{g.device}: {note}")
            # Schedule from the previous due time, not from now, so reads stay ~1 Hz
            # even when samples jitter; re-anchor if we fell far behind.
            due = (g.next_counter_t or t_s) + self.energy_interval_s
            g.next_counter_t = due if due > t_s else t_s + self.energy_interval_s
        s.energy_mj = g.energy.energy_mj
        return s

    def drain_errors(self) -> list[str]:
        """GPUs that failed since the last call (one line each); they are no longer read.
        Turn each into an `error` event (not fatal: the other GPUs go on)."""
        return _drain(self._errors)

    def drain_notes(self) -> list[str]:
        """Things worth recording that are not failures (an energy counter reset)."""
        return _drain(self._events)

    # -- power-cap control ---------------------------------------------------------
    def _live(self, device: str) -> _Gpu:
        for g in self._gpus:
            if g.device == device:
                if not g.alive:
                    raise PowerCapError(f"{device}: the GPU was lost; cannot set its power limit")
                return g
        known = ", ".join(g.device for g in self._gpus) or "none"
        raise PowerCapError(f"no GPU {device!r} in this run (GPUs: {known})")

    def set_power_limit(self, device: str, watts: float) -> None:
        nv = self._nvml
        if nv is None:
            raise PowerCapError("nvml: the meter is not open")
        g = self._live(device)
        if g.limit_range_w is None:
            raise PowerCapError(f"{device}: this GPU does not support a power limit")
        lo, hi = g.limit_range_w
        if not (isinstance(watts, int | float) and math.isfinite(watts) and lo <= watts <= hi):
            raise PowerCapError(f"{device}: power cap {watts} W is outside {lo:g}-{hi:g} W")
        # No lock here: NVML is thread-safe, and the guard may call this from a signal
        # handler that interrupted this very method on the main thread.
        try:
            nv.nvmlDeviceSetPowerManagementLimit(g.handle, round(watts * 1000))
        except nv.NVMLError_NoPermission:
            raise PowerCapError(
                f"{device}: setting the power limit needs root (or CAP_SYS_ADMIN)"
            ) from None
        except nv.NVMLError as exc:
            raise PowerCapError(f"{device}: cannot set the power limit ({exc})") from None
        try:
            g.limit_w = nv.nvmlDeviceGetEnforcedPowerLimit(g.handle) / 1000.0
        except nv.NVMLError:
            g.limit_w = float(watts)

    def power_limit_record(self, device: str) -> dict[str, Any]:
        """What the power-cap guard saves before the first change: the limit in force now
        (the one set, not the enforced one) and how to find this GPU again after a
        crash (its UUID; indices can change across reboots)."""
        nv = self._nvml
        if nv is None:
            raise PowerCapError("nvml: the meter is not open")
        g = self._live(device)
        try:
            limit_mw = int(nv.nvmlDeviceGetPowerManagementLimit(g.handle))
        except nv.NVMLError as exc:
            raise PowerCapError(f"{device}: cannot read the power limit ({exc})") from None
        return {
            "meter": self.name,
            "device": device,
            "index": g.index,
            "uuid": g.uuid,
            "name": g.name,
            "limit_w": limit_mw / 1000.0,
        }


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _drain(q: deque[str]) -> list[str]:
    out = []
    while q:
        out.append(q.popleft())
    return out
