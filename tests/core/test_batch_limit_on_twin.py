"""The batch-limit knob, applied by the runner's admission, moves the twin the way
batch size moves a real GPU: a lot for independent requests, barely for a chain."""

from __future__ import annotations

from typing import Any

from app.core.clock import run_async
from app.core.runner import RunConfig, Runner


def _summary(batch_limit: int, params: dict[str, Any], **kw: Any) -> dict[str, Any]:
    cfg = RunConfig(workload="sequential", workload_params=params, engine="sim", meters=["sim"],
                    batch_limit=batch_limit, workflows=1, **kw)
    out = run_async(Runner(cfg).run(), virtual=True)
    assert out.reason == "completed", out.message
    return out.summary


def test_independent_requests_gain_much_from_batch_limit() -> None:
    params = {"variant": "mapreduce", "chunks": 64, "chunk_tokens": 512, "output_tokens": 100,
              "reduce_tokens": 25}
    one, many = _summary(1, params), _summary(32, params)
    assert many["output_tokens"] == one["output_tokens"]
    assert many["tokens_per_s"] > 5 * one["tokens_per_s"]
    assert many["gpu_j_per_output_token"] < 0.5 * one["gpu_j_per_output_token"]


def test_sequential_chain_barely_gains_from_batch_limit() -> None:
    params = {"variant": "chain", "chunks": 12, "chunk_tokens": 1024, "output_tokens": 50}
    one, many = _summary(1, params), _summary(64, params)
    assert many["tokens_per_s"] < 1.05 * one["tokens_per_s"]
    assert abs(many["gpu_j_per_output_token"] / one["gpu_j_per_output_token"] - 1) < 0.05
