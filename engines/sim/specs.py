"""Datasheet specs of the simulated GPUs, the model table, and how options name them.

GPU numbers are public datasheet values (NVIDIA H100-SXM5 80GB, H200-SXM 141GB and
A100-SXM4 80GB).
Model shapes are each model's public config.json (hidden_size, intermediate_size,
num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, vocab_size,
tie_word_embeddings); parameter counts follow from them. The twin's fitted behaviour
coefficients (efficiencies, overheads, energy per FLOP and per byte) live in
`roofline.Calibration` and `power.PowerCoefficients`, not here.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
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
    link_bw_bps: float = 450e9  # NVLink bytes/s each way per GPU (H100: 900 GB/s both ways)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decoder-only transformer's shape (Llama-style: GQA attention, gated MLP)."""

    name: str
    layers: int
    hidden: int
    heads: int  # query heads
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    qk_norm: bool = False  # Qwen3 normalizes q and k per head: two more kernels a layer
    dtype_bytes: int = 2
    key: str = ""  # the table's name for it ("" for a model given as a dict)
    params_given: float | None = field(default=None, repr=False)  # a dict's params_b

    # ---- derived from the shape ---------------------------------------------------------

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def layer_params(self) -> float:
        attn = self.hidden * (self.q_dim + 2 * self.kv_heads * self.head_dim) \
            + self.q_dim * self.hidden
        mlp = 3 * self.hidden * self.intermediate  # gate, up, down
        return float(attn + mlp)

    @property
    def embed_params(self) -> float:
        return float(self.vocab * self.hidden)

    @property
    def params(self) -> float:
        """Parameter count (embedding, layers, and the LM head unless tied)."""
        if self.params_given is not None:
            return self.params_given
        head = 0.0 if self.tied_embeddings else self.embed_params
        return self.embed_params + self.layers * self.layer_params + head

    @property
    def body_params(self) -> float:
        """Parameters every token multiplies through (the layers), without the embedding
        lookup and the LM head (only sampled positions reach the head)."""
        if self.params_given is not None:
            return max(0.0, self.params_given - 2 * self.embed_params)
        return self.layers * self.layer_params

    @property
    def weight_bytes(self) -> float:
        """Bytes the model occupies in memory."""
        return self.params * self.dtype_bytes

    @property
    def streamed_weight_bytes(self) -> float:
        """Bytes read from HBM by one forward pass: the layers and the LM head (the
        embedding table is only looked up, a few rows a step)."""
        return (self.body_params + self.embed_params) * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        # K and V, every layer, every KV head.
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def attn_flops_per_ctx_token(self) -> float:
        # QK^T and AV: 2 FLOPs per multiply-add, two matmuls, per query dim, per layer.
        return 4.0 * self.layers * self.q_dim

    @property
    def kernels_per_layer(self) -> int:
        """Kernels one decoder layer launches under vLLM (norm, QKV GEMM, rotary,
        attention, O GEMM, norm, gate/up GEMM, activation, down GEMM; +2 with QK-norm)."""
        return 9 + (2 if self.qk_norm else 0)

    # The same numbers under their config.json names.
    @property
    def num_hidden_layers(self) -> int:
        return self.layers

    @property
    def hidden_size(self) -> int:
        return self.hidden

    @property
    def num_attention_heads(self) -> int:
        return self.heads

    @property
    def num_key_value_heads(self) -> int:
        return self.kv_heads

    @property
    def intermediate_size(self) -> int:
        return self.intermediate

    @property
    def vocab_size(self) -> int:
        return self.vocab

    def describe(self) -> str:
        return (f"{self.name}: {self.params / 1e9:.2f}B parameters, {self.layers} layers, "
                f"hidden {self.hidden}, {self.heads} heads ({self.kv_heads} KV) x "
                f"{self.head_dim}, MLP {self.intermediate}, vocab {self.vocab}")


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
        link_bw_bps=450e9,
    ),
    "h200": GpuSpec(
        key="h200",
        name="NVIDIA H200 (simulated)",
        peak_flops=989e12,  # the H100's tensor cores
        mem_bw_bps=4.8e12,  # HBM3e
        mem_bytes=141e9,
        tdp_w=700.0,
        min_power_limit_w=200.0,
        idle_w=75.0,  # not measured: the H100's
        max_clock_mhz=1980.0,
        idle_clock_mhz=345.0,
        link_bw_bps=450e9,
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
        link_bw_bps=300e9,
    ),
}


def _model(key: str, name: str, **shape: Any) -> ModelSpec:
    return ModelSpec(name=name, key=key, **shape)


# From each model's config.json on the Hugging Face hub.
MODELS: dict[str, ModelSpec] = {m.key: m for m in [
    _model("llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", layers=32, hidden=4096,
           heads=32, kv_heads=8, head_dim=128, intermediate=14336, vocab=128256),
    _model("llama-3.1-70b", "meta-llama/Llama-3.1-70B-Instruct", layers=80, hidden=8192,
           heads=64, kv_heads=8, head_dim=128, intermediate=28672, vocab=128256),
    _model("qwen3-8b", "Qwen/Qwen3-8B", layers=36, hidden=4096, heads=32, kv_heads=8,
           head_dim=128, intermediate=12288, vocab=151936, qk_norm=True),
    _model("qwen3-14b", "Qwen/Qwen3-14B", layers=40, hidden=5120, heads=40, kv_heads=8,
           head_dim=128, intermediate=17408, vocab=151936, qk_norm=True),
    _model("qwen3-32b", "Qwen/Qwen3-32B", layers=64, hidden=5120, heads=64, kv_heads=8,
           head_dim=128, intermediate=25600, vocab=151936, qk_norm=True),
    # The transformers engine's `llama-1b` preset (engines/transformers): Llama-3.2-1B's
    # shape with a 32k vocabulary, the model of the sample sessions in sessions/.
    _model("llama-1b", "llama-1b", layers=16, hidden=2048, heads=32, kv_heads=8,
           head_dim=64, intermediate=8192, vocab=32000),
]}

_ALIASES = {"llama-3.1-8b-instruct": "llama-3.1-8b", "llama-3.1-70b-instruct": "llama-3.1-70b",
            "meta-llama-3.1-8b-instruct": "llama-3.1-8b",
            "meta-llama-3.1-70b-instruct": "llama-3.1-70b"}

_SHAPE_FIELDS: dict[str, type] = {
    "layers": int,
    "hidden": int,
    "heads": int,
    "kv_heads": int,
    "head_dim": int,
    "intermediate": int,
    "vocab": int,
    "dtype_bytes": int,
    "params_b": float,
}
_REQUIRED = ("layers", "hidden", "kv_heads", "head_dim")
# config.json's names for the same fields (a Hugging Face config can be given as is).
_CONFIG_NAMES = {"num_hidden_layers": "layers", "hidden_size": "hidden",
                 "num_attention_heads": "heads", "num_key_value_heads": "kv_heads",
                 "intermediate_size": "intermediate", "vocab_size": "vocab",
                 "tie_word_embeddings": "tied_embeddings", "_name_or_path": "name"}
# config.json fields that say nothing about cost (ignored when a config is given).
_CONFIG_IGNORED = {"architectures", "model_type", "torch_dtype", "dtype", "rope_theta",
                   "rope_scaling", "max_position_embeddings", "rms_norm_eps", "bos_token_id",
                   "eos_token_id", "pad_token_id", "hidden_act", "initializer_range",
                   "attention_bias", "attention_dropout", "mlp_bias", "pretraining_tp",
                   "use_cache", "transformers_version", "sliding_window", "use_sliding_window",
                   "max_window_layers", "layer_types"}


def _from_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A config.json's fields under the table's names (head_dim derived when absent;
    Qwen3's q/k norms recognised by its model type)."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k in _CONFIG_IGNORED:
            continue
        out[_CONFIG_NAMES.get(k, k)] = v
    if "head_dim" not in out and "hidden" in out and "heads" in out:
        with contextlib.suppress(TypeError, ValueError, ZeroDivisionError):
            out["head_dim"] = int(out["hidden"]) // int(out["heads"])
    if str(raw.get("model_type", "")).startswith("qwen3"):
        out.setdefault("qk_norm", True)
    return out


def _load_config(path: Path) -> dict[str, Any]:
    f = path / "config.json" if path.is_dir() else path
    try:
        raw = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read model config {f}: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"model config {f} is not a JSON object")
    # A real config holds much the twin does not use (quantization, rope scaling, ...):
    # keep the shape, drop the rest.
    shape = {k: v for k, v in _from_config(raw).items()
             if k in _SHAPE_FIELDS or k in ("name", "qk_norm", "tied_embeddings")}
    shape.setdefault("name", str(path))
    return shape


def resolve_gpu(value: Any) -> GpuSpec:
    key = str(value).lower().replace("-sxm", "").strip()
    if key not in GPUS:
        raise ValueError(f"unknown simulated GPU {value!r} (choose from {', '.join(GPUS)})")
    return GPUS[key]


def model_key(value: str) -> str:
    key = value.strip().lower().split("/")[-1]
    key = _ALIASES.get(key, key)
    return key.removesuffix("-instruct")


def resolve_model(value: Any) -> ModelSpec:
    """A name from the model table (`MODELS`; the hub name works too), a config.json (or
    a folder holding one), or a dict of a shape: layers, hidden, kv_heads, head_dim and
    either params_b or heads, intermediate and vocab (dtype_bytes, name, qk_norm,
    tied_embeddings optional; config.json's own names are accepted too)."""
    if isinstance(value, str):
        key = model_key(value)
        if key not in MODELS and (value.endswith(".json") or Path(value).is_dir()):
            return resolve_model(_load_config(Path(value)))
        if key not in MODELS:
            raise ValueError(
                f"unknown simulated model {value!r} (choose from {', '.join(MODELS)} "
                "or give a table of layers, hidden, heads, kv_heads, head_dim, "
                "intermediate, vocab)"
            )
        return MODELS[key]
    if not isinstance(value, dict):
        raise ValueError(f"model must be a name or a dict of parameters, not {value!r}")
    if any(k in value for k in _CONFIG_NAMES):
        value = _from_config(value)
    flags = {"name", "qk_norm", "tied_embeddings"}
    unknown = set(value) - set(_SHAPE_FIELDS) - flags
    if unknown:
        raise ValueError(f"unknown model parameter(s): {', '.join(sorted(unknown))}")
    missing = [k for k in _REQUIRED if k not in value]
    if "params_b" not in value:
        missing += [k for k in ("intermediate", "vocab") if k not in value]
    if missing:
        raise ValueError(f"model dict lacks: {', '.join(missing)}")
    vals: dict[str, float] = {}
    for k, typ in _SHAPE_FIELDS.items():
        if k not in value:
            continue
        raw = value[k]
        try:
            if isinstance(raw, bool):
                raise TypeError
            v = typ(raw)
        except (TypeError, ValueError):
            raise ValueError(f"model parameter {k} must be a number, not {raw!r}") from None
        if not v > 0:
            raise ValueError(f"model parameter {k} must be positive, not {raw!r}")
        vals[k] = v
    hidden, head_dim = int(vals["hidden"]), int(vals["head_dim"])
    heads = int(vals.get("heads", max(1, hidden // head_dim)))
    params_b = vals.get("params_b")
    return ModelSpec(
        name=str(value.get("name", "custom")),
        layers=int(vals["layers"]),
        hidden=hidden,
        heads=heads,
        kv_heads=int(vals["kv_heads"]),
        head_dim=head_dim,
        # Without a shape for the MLP and vocabulary, params_b carries the weights.
        intermediate=int(vals.get("intermediate", 1)),
        vocab=int(vals.get("vocab", 1)),
        qk_norm=bool(value.get("qk_norm", False)),
        tied_embeddings=bool(value.get("tied_embeddings", False)),
        dtype_bytes=int(vals.get("dtype_bytes", 2)),
        params_given=None if params_b is None else params_b * 1e9,
    )
