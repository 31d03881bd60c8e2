"""Slow tier: wattflow against real vLLM (its CPU build) and the tiny model folder.

Runs only with `-m slow` in an environment that has vLLM (.ci/vllm_stage.sh makes one):
every workload briefly through the CLI with the `vllm` engine in-process and with
vLLM's OpenAI server plus the `openai` engine (sessions valid, token counts as
requested, stage order kept); the batch-limit knob against a live engine; restart and
abort. The tiny model runs on random weights (`load_format="dummy"`), so output text
is noise but token counts and timings are real.

vLLM starts its engine core with spawn, so CLI runs go through `python -m app` in a
subprocess; the in-process tests rely on pytest's own `__main__` being skipped by
spawn. Tests that start an OpenAI server come last so the server never competes with
another engine for the machine's cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import engines
import workloads
from app.core.clock import LoopClock
from app.core.events import EngineStateEvent, Event, KnobEvent, RequestEvent, StageEvent
from app.core.runner import RunConfig, Runner
from engines.base import EngineContext, EngineError, Request
from engines.vllm.engine import ENV_OPTIONS, VLLMEngine

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "models" / "tiny-llama"
SERVED_NAME = "tiny-llama"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vLLM is not installed here (run .ci/vllm_stage.sh)"),
    pytest.mark.timeout(900),
]

# Compiling the 2-layer model costs more than it saves; starting eager is tens of
# seconds faster. Applied to in-process runs through the engine's options variable.
FAST_START = {"enforce_eager": True}

# Every workload, shrunk to seconds on a CPU: small prompts, a few output tokens.
WORKLOAD_RUNS: dict[str, tuple[str, dict[str, Any], int]] = {
    # id: (workload, params, workflows)
    "sequential-chain": ("sequential", {"variant": "chain", "chunks": 3, "chunk_tokens": 96,
                                        "output_tokens": 12}, 1),
    "sequential-mapreduce": ("sequential", {"variant": "mapreduce", "chunks": 4,
                                            "chunk_tokens": 96, "output_tokens": 12,
                                            "reduce_tokens": 20}, 1),
    "interactive": ("interactive", {
        "rate": 4.0, "system_words": 150, "snippet_tokens_min": 64, "snippet_tokens_max": 128,
        "output_tokens_min": 8, "output_tokens_max": 24, "followup_prob": 1.0,
        "max_followups": 1, "think_s": 0.1, "followup_snippet_tokens_min": 32,
        "followup_snippet_tokens_max": 64}, 2),
    "agentic": ("agentic", {
        "agents": 2, "rounds": 2, "brief_tokens": 128, "context_growth_tokens": 16,
        "task_tokens": 16, "architect_tokens": 16, "engineer_tokens": 12,
        "review_tokens": 8, "revise_tokens": 12}, 1),
    "composite": ("composite", {
        "interactive_rate": 2.0, "sequential_rate": 2.0, "agentic_rate": 2.0,
        "interactive.system_words": 100, "interactive.snippet_tokens_min": 32,
        "interactive.snippet_tokens_max": 64, "interactive.output_tokens_min": 8,
        "interactive.output_tokens_max": 16, "interactive.think_s": 0.1,
        "interactive.followup_prob": 0.0,
        "sequential.chunks": 3, "sequential.chunk_tokens": 64, "sequential.output_tokens": 8,
        "sequential.reduce_tokens": 12,
        "agentic.agents": 2, "agentic.rounds": 1, "agentic.brief_tokens": 64,
        "agentic.architect_tokens": 12, "agentic.engineer_tokens": 8,
        "agentic.review_tokens": 8, "agentic.revise_tokens": 8}, 3),
}


def _workload_case(case: str) -> tuple[str, dict[str, Any], int]:
    name, params, count = WORKLOAD_RUNS[case]
    if name not in workloads.names():
        pytest.skip(f"workload {name!r} is not registered yet")
    workloads.create(name, params)  # a renamed parameter fails here, in one line
    return name, params, count


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault(ENV_OPTIONS, json.dumps(FAST_START))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # for the in-process tests


# Until engines/__init__.py registers "vllm", the CLI is started through a bootstrap
# that registers it first (with the same guard spawn needs).
_BOOTSTRAP = """
import sys
import engines
engines.register("vllm", lambda: __import__("engines.vllm", fromlist=["x"]).VLLMEngine.from_options)
from app.cli import main
if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
"""


def _run_cli(args: list[str], timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    entry = ["-m", "app"] if "vllm" in engines.names() else ["-c", _BOOTSTRAP]
    cmd = [sys.executable, *entry, "run", "--headless", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        pytest.fail(f"wattflow run {' '.join(args)} exited {proc.returncode}:\n{tail}")
    return proc


def _params(params: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for k, v in params.items():
        out += ["-p", f"{k}={v}"]
    return out


# -- session checks ------------------------------------------------------------------------

@dataclass
class Session:
    header: Any
    events: list[Event]
    end: Any


def _read(path: Path) -> Session:
    from app.core.session_reader import read_session

    data = read_session(path)
    assert not data.truncated, f"{path}: last line cut"
    return Session(data.header, data.events, data.end)


def check_session(path: Path, engine: str, workflows: int) -> Session:
    """A complete session: every request finished with exactly its requested output
    tokens, every stage started only after its dependencies finished, every workflow
    finished."""
    s = _read(path)
    assert s.header.engine["name"] == engine
    assert s.end is not None and s.end.reason == "completed", s.end
    reqs = [e for e in s.events if isinstance(e, RequestEvent)]
    failed = [e for e in reqs if e.phase == "failed"]
    assert not failed, f"failed requests: {[(e.request_id, e.reason) for e in failed][:5]}"
    finished = [e for e in reqs if e.phase == "finished"]
    submitted = {e.request_id for e in reqs if e.phase == "submitted"}
    assert finished and {e.request_id for e in finished} == submitted
    first = {e.request_id for e in reqs if e.phase == "first_token"}
    for e in finished:
        assert e.max_tokens > 0 and e.output_tokens == e.max_tokens, (
            f"{e.request_id}: {e.output_tokens} tokens, asked {e.max_tokens}")
        assert e.prompt_tokens > 0 and e.request_id in first
        assert e.reason == "length"  # EOS ignored: every call runs to max_tokens
    wf = [e for e in s.events if e.kind == "workflow"]
    assert sum(1 for e in wf if e.phase == "finished") == workflows
    assert not [e for e in wf if e.phase == "failed"]
    _check_stage_order(s.events)
    return s


def _check_stage_order(events: list[Event]) -> None:
    deps: dict[tuple[str, str], list[str]] = {}
    started: dict[tuple[str, str], float] = {}
    finished: dict[tuple[str, str], float] = {}
    submitted: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in events:
        if isinstance(e, StageEvent):
            key = (e.workflow_id, e.node)
            if e.phase == "declared":
                deps[key] = list(e.deps)
            elif e.phase == "started":
                started[key] = e.t_s
            elif e.phase == "finished":
                finished[key] = e.t_s
        elif isinstance(e, RequestEvent) and e.phase == "submitted":
            submitted[(e.workflow_id, e.node)].append(e.t_s)
    assert started, "no stage started"
    assert set(finished) == set(deps), "a declared stage never finished"
    for key, t_start in started.items():
        wid = key[0]
        for d in deps[key]:
            assert finished[(wid, d)] <= t_start, f"{key} started before its dependency {d}"
            for t_sub in submitted[key]:
                assert finished[(wid, d)] <= t_sub
        assert finished[key] >= t_start


# -- the tiny model folder ----------------------------------------------------------------

def test_tiny_model_folder_is_what_the_build_script_makes(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    subprocess.run([sys.executable, str(ROOT / "models" / "build_tiny_model.py"), "--out",
                    str(out)], check=True, capture_output=True, text=True, timeout=120)
    for name in ("config.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert json.loads((out / name).read_text()) == json.loads((TINY / name).read_text()), (
            f"{name} differs from a fresh build: rerun models/build_tiny_model.py")
    # The merges depend on the corpus, which may grow; the shape may not change.
    fresh, kept = (json.loads((d / "tokenizer.json").read_text()) for d in (out, TINY))
    assert fresh["added_tokens"] == kept["added_tokens"]
    assert fresh["pre_tokenizer"] == kept["pre_tokenizer"]
    assert 256 < len(fresh["model"]["vocab"]) <= 1024
    from transformers import AutoTokenizer

    for folder in (out, TINY):
        tok = AutoTokenizer.from_pretrained(str(folder))
        ids = tok("When in the Course of human events").input_ids
        assert ids[0] == tok.bos_token_id == 0 and max(ids) < 1024
        assert tok.decode(ids, skip_special_tokens=True) == "When in the Course of human events"


# -- the vllm engine in-process, through the CLI --------------------------------------------

@pytest.mark.parametrize("case", list(WORKLOAD_RUNS))
def test_workload_with_vllm_in_process(case: str, tmp_path: Path) -> None:
    name, params, count = _workload_case(case)
    session = tmp_path / f"{case}.jsonl"
    proc = _run_cli(["--engine", "vllm", "--model", str(TINY), "--workload", name,
                     "--workflows", str(count), "--session", str(session), "--seed", "3",
                     *_params(params)])
    s = check_session(session, "vllm", count)
    assert s.header.engine["details"]["load_format"] == "dummy"
    # vLLM's own scheduler view arrived as engine_state events.
    mine = [e for e in s.events if isinstance(e, EngineStateEvent) and e.source == "engine"]
    assert mine and any((e.running or 0) >= 1 for e in mine)
    assert "session:" in proc.stdout


def test_prompts_longer_than_the_context_name_that_cause(tmp_path: Path) -> None:
    """Every request is refused by vLLM: the run exits 1 with vLLM's own reason (the
    prompt's length against the model's), not a guess such as "the engine looks down"."""
    session = tmp_path / "too-long.jsonl"
    entry = ["-m", "app"] if "vllm" in engines.names() else ["-c", _BOOTSTRAP]
    proc = subprocess.run(
        [sys.executable, *entry, "run", "--headless", "--engine", "vllm", "--model", str(TINY),
         "-E", "max_model_len=128", "--workload", "sequential", "-p", "chunks=2",
         "-p", "chunk_tokens=600", "-p", "concurrency=2", "--workflows", "2",
         "--session", str(session)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    # vLLM's workers leave semaphores to multiprocessing's resource tracker, a process
    # of its own, which would warn of them at its exit, after wattflow's last line; the
    # engine silences it (engines/vllm/engine.py, quiet_resource_tracker).
    assert "leaked" not in proc.stderr and "resource_tracker" not in proc.stderr, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "never retrieved" not in proc.stderr
    last = err[-1]
    assert "requests failed" in last and "looks down" not in last
    # vLLM's own words, with the numbers: "This model's maximum context length is 128
    # tokens. However, your prompt contains 811 input tokens, ..."
    assert "128" in last and any(w in last for w in (
        "maximum context length", "maximum model length", "max_model_len")), last
    assert str(session) in last


# -- the batch-limit knob on a live vLLM engine --------------------------------------------

def _probe_engine() -> tuple[str, list[VLLMEngine]]:
    """Registers the vllm engine under a test name that keeps the instance the runner
    makes, so the test can read vLLM's own counts."""
    made: list[VLLMEngine] = []

    def factory(ctx: EngineContext, options: dict[str, Any]) -> VLLMEngine:
        eng = VLLMEngine.from_options(ctx, options)
        made.append(eng)
        return eng

    engines.register("vllm-probe", lambda: factory)
    return "vllm-probe", made


def test_batch_limit_changes_requests_in_flight_within_one_completion(tmp_path: Path) -> None:
    name, made = _probe_engine()
    wl_params = {"variant": "mapreduce", "chunks": 16, "chunk_tokens": 64,
                 "output_tokens": 96, "reduce_tokens": 8}
    cfg = RunConfig(
        workload="sequential", workload_params=wl_params, engine=name,
        engine_options={"model": str(TINY), "max_num_seqs": 16, **FAST_START},
        meters=["none"], batch_limit=2, workflows=1, session_path=tmp_path / "knob.jsonl",
    )
    runner = Runner(cfg, workloads.create("sequential", wl_params))
    obs: dict[str, Any] = {}

    async def control(r: Runner) -> None:
        async with asyncio.timeout(300):
            while not made or made[0]._llm is None:
                await asyncio.sleep(0.01)
            eng = made[0]
            low: list[tuple[int, int]] = []
            while eng.completed < 2:  # limit 2
                low.append((eng.scheduler_running or 0, eng.in_engine))
                await asyncio.sleep(0.001)
            obs["low_peak"] = (max(x[0] for x in low), max(x[1] for x in low))
            c0 = eng.completed
            r.set_knob("batch_limit", 6, source="test")
            while (eng.scheduler_running or 0) < 6:
                await asyncio.sleep(0.001)
            obs["raise_completions"] = eng.completed - c0
            c1 = eng.completed
            r.set_knob("batch_limit", 1, source="test")
            over: list[tuple[int, int]] = []
            after: set[int] = set()  # vLLM's running count once the 6 have finished
            while eng.completed < c1 + 8:
                k = eng.completed - c1
                if eng.in_engine > max(1, 6 - k):
                    over.append((k, eng.in_engine))
                if k >= 6:
                    after.add(eng.scheduler_running or 0)
                await asyncio.sleep(0.001)
            obs["lower_over"] = over
            obs["lower_after"] = after

    async def main() -> Any:
        tasks: list[asyncio.Task[None]] = []
        outcome = await runner.run(on_ready=lambda r: tasks.append(
            asyncio.create_task(control(r))))
        await asyncio.gather(*tasks)
        return outcome

    outcome = asyncio.run(main())
    assert outcome.reason == "completed", outcome.message
    # Limit 2: vLLM never had more than 2 requests.
    assert obs["low_peak"] == (2, 2)
    # Raised to 6: vLLM's scheduler ran 6 before more than one request completed.
    assert obs["raise_completions"] <= 1
    # Lowered to 1: no request admitted while in flight was above the new limit (after
    # k completions at most 6 - k in vLLM), then vLLM ran them one at a time.
    assert obs["lower_over"] == []
    assert 1 in obs["lower_after"] and obs["lower_after"] <= {0, 1}
    s = check_session(tmp_path / "knob.jsonl", "vllm", 1)
    knobs = [(e.value, e.source) for e in s.events
             if isinstance(e, KnobEvent) and e.knob == "batch_limit"]
    assert (6, "test") in knobs and (1, "test") in knobs


# -- the engine directly: restart with a new max_num_seqs, abort ----------------------------

@dataclass
class _Peak:
    running: int
    waiting: int


async def _batch(eng: VLLMEngine, n: int, tokens: int, tag: str) -> _Peak:
    peak = _Peak(0, 0)

    async def one(i: int) -> None:
        got, first, text = 0, None, ""
        async for ev in eng.generate(Request(f"{tag}{i}", "We hold these truths", 6, tokens)):
            first = first or ev
            got += ev.decode_tokens
            text += ev.text
            peak.running = max(peak.running, eng.scheduler_running or 0)
            peak.waiting = max(peak.waiting, eng.scheduler_waiting or 0)
            if ev.finished:
                assert ev.output_tokens == tokens and ev.finish_reason == "length"
        assert first is not None and first.prefill_tokens > 0
        assert first.prompt_tokens == first.prefill_tokens
        assert got == tokens
        assert text.strip()  # detokenized by the folder's tokenizer (random words)

    await asyncio.gather(*(one(i) for i in range(n)))
    return peak


def test_restart_changes_max_num_seqs_and_a_closed_stream_is_aborted() -> None:
    events: list[Event] = []

    async def main() -> None:
        eng = VLLMEngine.from_options(
            EngineContext(LoopClock(), events.append),
            {"model": str(TINY), "max_num_seqs": 2, "state_interval_s": 0, **FAST_START})
        await eng.start()
        try:
            peak = await _batch(eng, 6, 48, "a")
            assert (peak.running, peak.waiting >= 1) == (2, True)

            # Closing a stream early aborts the request inside vLLM.
            stream = eng.generate(Request("long", "We hold these truths", 6, 4000))
            got = 0
            async for ev in stream:
                got += ev.decode_tokens
                if got >= 4:
                    break
            await stream.aclose()
            assert (eng.aborted, eng.in_engine) == (1, 0)
            assert eng._llm.get_num_unfinished_requests() == 0

            # A prompt longer than the model takes fails that request, in one line.
            too_long = Request("too-long", "", 20000, 4, prompt_token_ids=[5] * 20000)
            with pytest.raises(EngineError) as err:
                async for _ in eng.generate(too_long):
                    pass
            assert "\n" not in str(err.value) and "20000" in str(err.value), str(err.value)
            assert eng.in_engine == 0

            await eng.restart(max_num_seqs=4)
            notes = [e.note for e in events if isinstance(e, EngineStateEvent) and e.note]
            assert notes == ["restarted with max_num_seqs=4"]
            assert eng.info().max_num_seqs == 4
            peak = await _batch(eng, 6, 48, "b")
            assert peak.running == 4
        finally:
            await eng.stop()

    asyncio.run(main())
    states = [e for e in events if isinstance(e, EngineStateEvent) and e.running is not None]
    assert states and all(e.source == "engine" for e in states)
    assert all(0 <= (e.kv_cache_pct or 0) <= 100 for e in states)


# -- vLLM's OpenAI server with the openai engine (last: the server holds a core) ------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openai_engine_ready() -> str | None:
    try:
        importlib.import_module("engines.openai")
    except Exception as exc:
        return f"engines/openai is not importable yet: {exc}"
    if "openai" not in engines.names():
        return "the openai engine is not registered in engines/__init__.py yet"
    return None


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    why = _openai_engine_ready()
    if why:
        pytest.skip(why)
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(TINY),
           "--served-model-name", SERVED_NAME, "--load-format", "dummy", "--host", "127.0.0.1",
           "--port", str(port), "--enforce-eager", "--max-num-seqs", "64",
           "--max-num-batched-tokens", "8192"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 400
        while True:
            if proc.poll() is not None:
                tail = "\n".join(log.read_text().splitlines()[-20:])
                pytest.fail(f"vLLM's OpenAI server exited {proc.returncode}:\n{tail}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url + "/health",
                                                                      timeout=2) as resp:
                if resp.status == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail("vLLM's OpenAI server did not come up in 400 s")
            time.sleep(1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.mark.parametrize("case", list(WORKLOAD_RUNS))
def test_workload_with_openai_engine_against_vllm_server(
    case: str, openai_server: str, tmp_path: Path
) -> None:
    name, params, count = _workload_case(case)
    session = tmp_path / f"{case}.jsonl"
    _run_cli(["--engine", "openai", "--url", openai_server, "--model", SERVED_NAME,
              "--workload", name, "--workflows", str(count), "--session", str(session),
              "--seed", "3", *_params(params)], timeout_s=300)
    check_session(session, "openai", count)
