"""Datasheet specs of the simulated GPUs and models, and how options name them.

Numbers here are public datasheet values (NVIDIA H100-SXM5 80GB and A100-SXM4 80GB
datasheets; the Llama-3.1-8B config.json). The twin's fitted behaviour coefficients
(efficiencies, overheads, power split) live in `roofline.Calibration` and
`power.PowerCoefficients`, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class GpuSpec:
    key: str
    name: str
    peak_flops: float  # dense bf16 tensor FLOP/s at max boost clock
    mem_bw_bps: float  # HBM bytes/s
    mem_bytes: float
    tdp_w: float
    min_power_limit_w: float
    idle_w: float
    max_clock_mhz: float
    idle_clock_mhz: float


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    params: float  # parameter count
    layers: int
    hidden: int  # = query heads x head_dim for Llama-style models
    kv_heads: int
    head_dim: int
    dtype_bytes: int = 2

    @property
    def weight_bytes(self) -> float:
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        # K and V, every layer, every KV head.
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def attn_flops_per_ctx_token(self) -> float:
        # QK^T and AV: 2 FLOPs per multiply-add, two matmuls, per query-dim, per layer.
        return 4.0 * self.layers * self.hidden


GPUS: dict[str, GpuSpec] = {
    "h100": GpuSpec(
        key="h100",
        name="NVIDIA H100 80GB HBM3 (simulated)",
        peak_flops=989e12,
        mem_bw_bps=3.35e12,
        mem_bytes=80 * GIB,
        tdp_w=700.0,
        min_power_limit_w=200.0,
        idle_w=75.0,
        max_clock_mhz=1980.0,
        idle_clock_mhz=345.0,
    ),
    "a100": GpuSpec(
        key="a100",
        name="NVIDIA A100-SXM4-80GB (simulated)",
        peak_flops=312e12,
        mem_bw_bps=2.039e12,
        mem_bytes=80 * GIB,
        tdp_w=400.0,
        min_power_limit_w=100.0,
        idle_w=55.0,
        max_clock_mhz=1410.0,
        idle_clock_mhz=210.0,
    ),
}

MODELS: dict[str, ModelSpec] = {
    "llama-3.1-8b": ModelSpec(
        name="meta-llama/Llama-3.1-8B-Instruct",
        params=8.03e9,
        layers=32,
        hidden=4096,
        kv_heads=8,
        head_dim=128,
    ),
}

_MODEL_FIELDS: dict[str, type] = {
    "params_b": float,
    "layers": int,
    "hidden": int,
    "kv_heads": int,
    "head_dim": int,
    "dtype_bytes": int,
}


def resolve_gpu(value: Any) -> GpuSpec:
    key = str(value).lower().replace("-sxm", "").strip()
    if key not in GPUS:
        raise ValueError(f"unknown simulated GPU {value!r} (choose from {', '.join(GPUS)})")
    return GPUS[key]


def resolve_model(value: Any) -> ModelSpec:
    """A known model name, or a dict of parameters (params_b, layers, hidden, kv_heads,
    head_dim, dtype_bytes; name optional)."""
    if isinstance(value, str):
        key = value.lower().split("/")[-1].removesuffix("-instruct")
        if key not in MODELS:
            raise ValueError(
                f"unknown simulated model {value!r} (choose from {', '.join(MODELS)} "
                "or give a dict of params_b, layers, hidden, kv_heads, head_dim)"
            )
        return MODELS[key]
    if not isinstance(value, dict):
        raise ValueError(f"model must be a name or a dict of parameters, not {value!r}")
    unknown = set(value) - set(_MODEL_FIELDS) - {"name"}
    if unknown:
        raise ValueError(f"unknown model parameter(s): {', '.join(sorted(unknown))}")
    missing = [k for k in _MODEL_FIELDS if k not in value and k != "dtype_bytes"]
    if missing:
        raise ValueError(f"model dict lacks: {', '.join(missing)}")
    vals: dict[str, float] = {}
    for k, typ in _MODEL_FIELDS.items():
        raw = value.get(k, 2 if k == "dtype_bytes" else None)
        try:
            v = typ(raw)
        except (TypeError, ValueError):
            raise ValueError(f"model parameter {k} must be a number, not {raw!r}") from None
        if v <= 0:
            raise ValueError(f"model parameter {k} must be positive, not {raw!r}")
        vals[k] = v
    return ModelSpec(
        name=str(value.get("name", "custom")),
        params=vals["params_b"] * 1e9,
        layers=int(vals["layers"]),
        hidden=int(vals["hidden"]),
        kv_heads=int(vals["kv_heads"]),
        head_dim=int(vals["head_dim"]),
        dtype_bytes=int(vals["dtype_bytes"]),
    )
