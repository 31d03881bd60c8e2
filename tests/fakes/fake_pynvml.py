"""A fake `pynvml` (nvidia-ml-py) that behaves like a set of GPUs.

Inject it where the meter imports `pynvml`:

    fake = FakeNvml([FakeGpu(power_w=300.0)])
    monkeypatch.setitem(sys.modules, "pynvml", fake)

Behaviour, not constants: the energy counter advances with power over the fake's
time (`advance(dt_s)`), power limits are bounded by the constraints and need `root`
(else NVMLError_NoPermission), a GPU can disappear (NVMLError_GPUIsLost), a GPU can
lack the energy counter or the power field values (NVMLError_NotSupported / a
per-field NOT_SUPPORTED return, as on pre-Volta or some boards). Units are NVML's:
mW for power and limits, mJ for energy, bytes for memory.

With `state_path`, limits and the root flag persist in a JSON file so that a child
process and its parent see the same GPUs (subprocess tests of the power-cap restore).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Constants with NVML's values, so code written against pynvml reads them unchanged.
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999

NVML_VALUE_TYPE_DOUBLE = 0
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_VALUE_TYPE_UNSIGNED_LONG = 2
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
NVML_VALUE_TYPE_SIGNED_LONG_LONG = 4
NVML_VALUE_TYPE_SIGNED_INT = 5

NVML_FI_DEV_POWER_AVERAGE = 185
NVML_FI_DEV_POWER_INSTANT = 186
NVML_CLOCK_SM = 1
NVML_TEMPERATURE_GPU = 0

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    value = NVML_ERROR_UNKNOWN

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")


class NVMLError_Uninitialized(NVMLError):
    value = NVML_ERROR_UNINITIALIZED


class NVMLError_InvalidArgument(NVMLError):
    value = NVML_ERROR_INVALID_ARGUMENT


class NVMLError_NotSupported(NVMLError):
    value = NVML_ERROR_NOT_SUPPORTED


class NVMLError_NoPermission(NVMLError):
    value = NVML_ERROR_NO_PERMISSION


class NVMLError_NotFound(NVMLError):
    value = NVML_ERROR_NOT_FOUND


class NVMLError_DriverNotLoaded(NVMLError):
    value = NVML_ERROR_DRIVER_NOT_LOADED


class NVMLError_LibraryNotFound(NVMLError):
    value = NVML_ERROR_LIBRARY_NOT_FOUND


class NVMLError_GPUIsLost(NVMLError):
    value = NVML_ERROR_GPU_IS_LOST


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = ""
    power_w: float = 100.0  # what the board draws now; tests change it
    power_avg_w: float | None = None  # None: follows power_w
    limit_w: float = 700.0
    default_limit_w: float = 700.0
    min_limit_w: float = 200.0
    max_limit_w: float = 700.0
    energy_mj: float = 1_000_000.0  # counters start wherever the driver left them
    has_energy_counter: bool = True
    has_power_fields: bool = True
    util_pct: int = 50
    mem_used_bytes: int = 10 * 1024**3
    mem_total_bytes: int = 80 * 1024**3
    sm_clock_mhz: int = 1980
    temp_c: int = 45
    external_limit_w: float | None = None  # e.g. a board/thermal limit below the set one
    lost: bool = False


@dataclass
class _Handle:
    index: int


@dataclass
class _Utilization:
    gpu: int
    memory: int


@dataclass
class _Memory:
    total: int
    used: int
    free: int


@dataclass
class _Value:
    dVal: float = 0.0
    uiVal: int = 0
    ulVal: int = 0
    ullVal: int = 0
    sllVal: int = 0
    siVal: int = 0


@dataclass
class _FieldValue:
    fieldId: int
    nvmlReturn: int = NVML_SUCCESS
    valueType: int = NVML_VALUE_TYPE_UNSIGNED_INT
    timestamp: int = 0
    latencyUsec: int = 0
    value: _Value = field(default_factory=_Value)


class FakeNvml:
    """Stands in for the `pynvml` module (attribute access mirrors the real one)."""

    NVMLError = NVMLError
    NVMLError_Uninitialized = NVMLError_Uninitialized
    NVMLError_InvalidArgument = NVMLError_InvalidArgument
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NoPermission = NVMLError_NoPermission
    NVMLError_NotFound = NVMLError_NotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_GPUIsLost = NVMLError_GPUIsLost

    NVML_SUCCESS = NVML_SUCCESS
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_VALUE_TYPE_DOUBLE = NVML_VALUE_TYPE_DOUBLE
    NVML_VALUE_TYPE_UNSIGNED_INT = NVML_VALUE_TYPE_UNSIGNED_INT
    NVML_VALUE_TYPE_UNSIGNED_LONG = NVML_VALUE_TYPE_UNSIGNED_LONG
    NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
    NVML_VALUE_TYPE_SIGNED_LONG_LONG = NVML_VALUE_TYPE_SIGNED_LONG_LONG
    NVML_VALUE_TYPE_SIGNED_INT = NVML_VALUE_TYPE_SIGNED_INT
    NVML_FI_DEV_POWER_AVERAGE = NVML_FI_DEV_POWER_AVERAGE
    NVML_FI_DEV_POWER_INSTANT = NVML_FI_DEV_POWER_INSTANT
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU

    __name__ = "pynvml"

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        *,
        root: bool = False,
        init_error: type[Exception] | None = None,
        state_path: str | Path | None = None,
    ) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        for i, g in enumerate(self.gpus):
            g.uuid = g.uuid or f"GPU-fake-{i:04d}"
        self.root = root
        self.init_error = init_error
        self.initialized = 0  # nvmlInit is reference-counted, like the real library
        self.calls: Counter[str] = Counter()
        self.set_calls: list[tuple[int, int]] = []  # (index, mW) in order
        self.state_path = Path(state_path) if state_path else None
        if self.state_path is not None:
            if self.state_path.exists():
                self._load()
            else:
                self.save()

    # -- behaviour the tests drive -------------------------------------------------
    def advance(self, dt_s: float) -> None:
        """Let `dt_s` seconds pass: counters advance with each GPU's power."""
        for g in self.gpus:
            if not g.lost:
                g.energy_mj += g.power_w * dt_s * 1000.0

    def lose(self, index: int) -> None:
        self.gpus[index].lost = True

    def reset_counter(self, index: int) -> None:
        """What a driver reload does to the energy counter."""
        self.gpus[index].energy_mj = 0.0

    # -- persistence for cross-process tests ---------------------------------------
    def save(self) -> None:
        if self.state_path is None:
            return
        data = {"root": self.root, "gpus": [asdict(g) for g in self.gpus]}
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.state_path)

    def _load(self) -> None:
        assert self.state_path is not None
        data = json.loads(self.state_path.read_text())
        self.root = bool(data["root"])
        self.gpus = [FakeGpu(**g) for g in data["gpus"]]

    @classmethod
    def read_state(cls, path: str | Path) -> list[FakeGpu]:
        data = json.loads(Path(path).read_text())
        return [FakeGpu(**g) for g in data["gpus"]]

    # -- the pynvml API ------------------------------------------------------------
    def _count(self, name: str) -> None:
        self.calls[name] += 1

    def _check_init(self) -> None:
        if self.initialized <= 0:
            raise NVMLError_Uninitialized()

    def _gpu(self, handle: _Handle) -> FakeGpu:
        self._check_init()
        g = self.gpus[handle.index]
        if g.lost:
            raise NVMLError_GPUIsLost()
        return g

    def nvmlInit(self) -> None:
        self._count("nvmlInit")
        if self.init_error is not None:
            raise self.init_error()
        if self.state_path is not None:
            self._load()
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self._count("nvmlShutdown")
        self._check_init()
        self.initialized -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check_init()
        return "580.00.fake"

    def nvmlDeviceGetCount(self) -> int:
        self._check_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._check_init()
        if not 0 <= index < len(self.gpus):
            raise NVMLError_InvalidArgument()
        return _Handle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> _Handle:
        self._check_init()
        text = uuid.decode() if isinstance(uuid, bytes) else uuid
        for i, g in enumerate(self.gpus):
            if g.uuid == text:
                return _Handle(i)
        raise NVMLError_NotFound()

    def nvmlDeviceGetName(self, h: _Handle) -> str:
        return self._gpu(h).name

    def nvmlDeviceGetUUID(self, h: _Handle) -> str:
        return self._gpu(h).uuid

    def nvmlDeviceGetTotalEnergyConsumption(self, h: _Handle) -> int:
        self._count("nvmlDeviceGetTotalEnergyConsumption")
        g = self._gpu(h)
        if not g.has_energy_counter:
            raise NVMLError_NotSupported()
        return int(g.energy_mj)

    def nvmlDeviceGetFieldValues(self, h: _Handle, field_ids: list[int]) -> list[_FieldValue]:
        self._count("nvmlDeviceGetFieldValues")
        g = self._gpu(h)
        out = []
        for fid in field_ids:
            fv = _FieldValue(fieldId=fid)
            if not g.has_power_fields or fid not in (
                NVML_FI_DEV_POWER_INSTANT,
                NVML_FI_DEV_POWER_AVERAGE,
            ):
                fv.nvmlReturn = NVML_ERROR_NOT_SUPPORTED
            else:
                w = g.power_w if fid == NVML_FI_DEV_POWER_INSTANT else (g.power_avg_w or g.power_w)
                fv.value.uiVal = round(w * 1000)
            out.append(fv)
        return out

    def nvmlDeviceGetPowerUsage(self, h: _Handle) -> int:
        self._count("nvmlDeviceGetPowerUsage")
        g = self._gpu(h)
        return round((g.power_avg_w or g.power_w) * 1000)

    def nvmlDeviceGetUtilizationRates(self, h: _Handle) -> _Utilization:
        g = self._gpu(h)
        return _Utilization(gpu=g.util_pct, memory=g.util_pct // 2)

    def nvmlDeviceGetMemoryInfo(self, h: _Handle) -> _Memory:
        g = self._gpu(h)
        return _Memory(g.mem_total_bytes, g.mem_used_bytes, g.mem_total_bytes - g.mem_used_bytes)

    def nvmlDeviceGetClockInfo(self, h: _Handle, kind: int) -> int:
        g = self._gpu(h)
        if kind != NVML_CLOCK_SM:
            raise NVMLError_NotSupported()
        return g.sm_clock_mhz

    def nvmlDeviceGetTemperature(self, h: _Handle, sensor: int) -> int:
        return self._gpu(h).temp_c

    def nvmlDeviceGetPowerManagementLimit(self, h: _Handle) -> int:
        return round(self._gpu(h).limit_w * 1000)

    def nvmlDeviceGetEnforcedPowerLimit(self, h: _Handle) -> int:
        g = self._gpu(h)
        enforced = g.limit_w if g.external_limit_w is None else min(g.limit_w, g.external_limit_w)
        return round(enforced * 1000)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: _Handle) -> int:
        return round(self._gpu(h).default_limit_w * 1000)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h: _Handle) -> list[int]:
        g = self._gpu(h)
        return [round(g.min_limit_w * 1000), round(g.max_limit_w * 1000)]

    def nvmlDeviceSetPowerManagementLimit(self, h: _Handle, limit_mw: int) -> None:
        self._count("nvmlDeviceSetPowerManagementLimit")
        g = self._gpu(h)
        if not self.root:
            raise NVMLError_NoPermission()
        if not round(g.min_limit_w * 1000) <= limit_mw <= round(g.max_limit_w * 1000):
            raise NVMLError_InvalidArgument()
        g.limit_w = limit_mw / 1000.0
        self.set_calls.append((h.index, limit_mw))
        self.save()


def install(monkeypatch: Any, fake: FakeNvml) -> FakeNvml:
    """Put `fake` where `import pynvml` finds it (pytest's monkeypatch undoes it)."""
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake
