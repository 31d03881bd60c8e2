"""The interactive workload on a real GPU: transformers engine, NVML meter, two batch limits.

Run on the lent GPU machine from the repository root (the device tool), e.g.

    python bench/gpu_transformers.py --out "$OUT" --batch-limits 8,64 --duration 75

Each batch limit is one `wattflow run` (the same code path as the CLI) recorded to
OUT/interactive-transformers-b<N>.jsonl; then every session is read back with the
session reader and a table of J/token, tokens/s and average GPU power is printed and
written to OUT/summary.json. The NVML meter is polled at `--poll-hz` (default 5 Hz; an H100
refreshes its power readings about 10 times a second) so that a 75 s session stays well
under 1 MB; the energy counter itself is read once a second as always.

It never changes the card's power limit or clocks.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engines
import meters


def _register(poll_hz: float) -> None:
    if "transformers" not in engines.names():
        def loader() -> Any:
            from engines.transformers import TransformersEngine

            return TransformersEngine.from_options

        engines.register("transformers", loader)

    def nvml_loader() -> Any:
        from meters.nvml.meter import NvmlMeter

        return lambda opts: NvmlMeter.from_options({**opts, "poll_interval_s": 1.0 / poll_hz})

    meters.register("nvml", nvml_loader)


def _environment() -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version()}
    for mod in ("torch", "transformers", "pynvml", "orjson", "aiohttp"):
        try:
            m = __import__(mod)
            env[mod] = getattr(m, "__version__", "present")
        except Exception as exc:
            env[mod] = f"missing ({exc})"
    try:
        import torch

        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except Exception:
        pass
    return env


def _summarise(path: Path) -> dict[str, Any]:
    """Numbers of one session, from the file (what `wattflow report` reads too)."""
    from app.core.session_reader import read_session

    session = read_session(path)
    end = session.end
    summary: dict[str, Any] = dict(end.summary) if end is not None else {}
    samples = [e for e in session.events if getattr(e, "kind", "") == "sample"
               and getattr(e, "component", "") == "gpu"]
    power = [e.power_w for e in samples if e.power_w is not None]  # type: ignore[attr-defined]
    gpu_j = (summary.get("measured_energy_j") or {}).get("gpu")
    out_tokens = summary.get("output_tokens") or 0
    duration = summary.get("duration_s")
    avg_power = summary.get("avg_power_w") or {}
    return {
        "session": path.name,
        "bytes": path.stat().st_size,
        "duration_s": duration,
        "output_tokens": out_tokens,
        "prompt_tokens": summary.get("prompt_tokens"),
        "requests_finished": summary.get("requests_finished"),
        "requests_failed": summary.get("requests_failed"),
        "gpu_energy_j": gpu_j,
        "j_per_output_token": summary.get("gpu_j_per_output_token"),
        "output_tokens_per_s": summary.get("tokens_per_s"),
        "avg_gpu_power_w": avg_power.get("gpu") if isinstance(avg_power, dict) else avg_power,
        "mean_sampled_power_w": sum(power) / len(power) if power else None,
        "ttft_p50_s": summary.get("ttft_p50_s"),
        "tpot_p50_s": summary.get("tpot_p50_s"),
        "latency_p50_s": summary.get("latency_p50_s"),
        "samples": len(samples),
        "engine_notes": [e.note for e in session.events  # type: ignore[attr-defined]
                         if getattr(e, "kind", "") == "engine_state" and getattr(e, "note", None)],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-limits", default="8,64")
    ap.add_argument("--duration", type=float, default=75.0)
    ap.add_argument("--model", default="llama-1b")
    ap.add_argument("--workload", default="interactive")
    ap.add_argument("--rate", type=float, default=None)
    ap.add_argument("--poll-hz", type=float, default=5.0)
    ap.add_argument("--tag", default="", help="added to session and summary names")
    ap.add_argument("--meter", default="auto")
    ap.add_argument("--param", action="append", default=[])
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = _environment()
    print("environment:", json.dumps(env), flush=True)
    _register(args.poll_hz)
    # transformers' continuous batching warns on every finished request in 5.17
    # ("attempted to free blocks for non-existent request_id"): keep the log readable.
    import logging

    logging.getLogger("ContinuousBatchingLogger").setLevel(logging.ERROR)
    from app.cli import main as cli_main

    results: list[dict[str, Any]] = []
    for b in [int(x) for x in args.batch_limits.split(",")]:
        session = out / f"{args.workload}{args.tag}-transformers-b{b}.jsonl"
        argv = ["run", "--workload", args.workload, "--engine", "transformers",
                "--model", args.model, "--meter", args.meter, "--batch-limit", str(b),
                "--duration", str(args.duration), "--headless", "--session", str(session),
                "--seed", "0"]
        if args.rate is not None:
            argv += ["--rate", str(args.rate)]
        for p in args.param:
            argv += ["-p", p]
        print("wattflow", " ".join(argv), flush=True)
        t0 = time.perf_counter()
        rc = cli_main(argv)
        print(f"exit {rc} after {time.perf_counter() - t0:.1f} s", flush=True)
        if session.exists():
            r = _summarise(session)
            r.update(batch_limit=b, exit=rc, wall_s=time.perf_counter() - t0)
            results.append(r)
            (out / f"summary{args.tag}.json").write_text(json.dumps({"env": env, "runs": results},
                                                         indent=1))
    print()
    print(f"{'batch':>5} {'out tok':>8} {'tok/s':>8} {'avg W':>7} {'J/tok':>7} "
          f"{'done':>5} {'failed':>6} {'KB':>6}")
    for r in results:
        def f(v: Any, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        print(f"{r['batch_limit']:>5} {r['output_tokens']:>8} "
              f"{f(r['output_tokens_per_s'], '8.1f')} {f(r['avg_gpu_power_w'], '7.1f')} "
              f"{f(r['j_per_output_token'], '7.3f')} {f(r['requests_finished'], '>5')} "
              f"{f(r['requests_failed'], '>6')} {r['bytes'] / 1024:6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
