"""`wattflow` command line. Exit codes: 0 done, 1 the run failed, 2 usage or input error."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A user mistake: printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage block: scripts and people both read the first line.
        self.exit(EXIT_USAGE, f"wattflow: error: {message} (see '{self.prog} --help')\n")


def _positive(kind: type[float] | type[int]) -> Any:
    def conv(text: str) -> float | int:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return v

    return conv


def _param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    key, raw = text.split("=", 1)
    value: Any = raw
    for conv in (int, float):
        try:
            value = conv(raw)
            break
        except ValueError:
            continue
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    return key.strip().replace("-", "_"), value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="wattflow", description=__doc__)
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    r = sub.add_parser("run", help="run a workload against an engine, measured and recorded")
    r.add_argument("--workload", default="composite",
                   help="composite (default), sequential, interactive, agentic, or FILE.toml"
                        " (docs/workflows.md)")
    r.add_argument("-p", "--param", action="append", type=_param, default=[], metavar="KEY=VALUE",
                   help="workload parameter, e.g. -p variant=mapreduce -p chunks=15")
    r.add_argument("--engine", default="sim", help="sim (default), vllm, openai, parrot")
    r.add_argument("-E", "--engine-opt", action="append", type=_param, default=[],
                   metavar="KEY=VALUE",
                   help="engine option, e.g. -E api=chat -E timeout_s=30 -E max_num_seqs=256")
    r.add_argument("--model", default=None, help="model name or folder (engine-specific)")
    r.add_argument("--url", default=None, help="server URL for openai/parrot engines")
    r.add_argument("--gpu", dest="gpu_spec", default=None,
                   help="simulated GPU for the sim engine: h100 (default) or a100")
    r.add_argument("--meter", action="append", default=None,
                   help="auto (default), sim, nvml, rapl or none; repeatable")
    r.add_argument("--gpus", default=None, help="GPU indices to measure, e.g. 0,1")
    r.add_argument("--poll-interval", type=_positive(float), default=None, metavar="SECONDS",
                   help="meter polling interval (default: each meter's, e.g. 0.05 s for NVML)")
    r.add_argument("--batch-limit", type=_positive(int), default=64,
                   help="requests in flight at most (default 64)")
    r.add_argument("--power-cap", type=_positive(float), default=None, help="GPU power cap, W")
    r.add_argument("--allow-power-cap", action="store_true",
                   help="allow changing a real GPU's power limit (restored at exit)")
    r.add_argument("--max-tokens", type=_positive(int), default=None,
                   help="cap on output tokens per call")
    r.add_argument("--rate", type=_positive(float), default=None,
                   help="workflow arrivals per second (default: the workload's own)")
    stop = r.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=_positive(float), default=None, help="seconds to run")
    stop.add_argument("--workflows", type=_positive(int), default=None,
                      help="number of workflows to run")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--session", default=None, help="session file (default sessions/NAME.jsonl)")
    r.add_argument("--headless", action="store_true", help="no dashboard: progress lines")
    r.add_argument("--fast", action="store_true",
                   help="virtual time: as fast as the machine allows (sim engine only)")
    r.add_argument("--at", action="append", default=[], metavar="SECONDS:KNOB=VALUE",
                   help="change a knob mid-run, e.g. --at 60:power_cap=300; repeatable")
    r.add_argument("--request-timeout", type=_positive(float), default=None,
                   help="seconds before a request is failed")

    rep = sub.add_parser("report", help="tables of a recorded session (or compare several)")
    rep.add_argument("sessions", nargs="+")
    rep.add_argument("--csv", default=None)
    rep.add_argument("--json", action="store_true")
    rep.add_argument("--plot", default=None, metavar="PNG")

    from app.commands.replay import parse_speed

    rp = sub.add_parser("replay", help="play a recorded session back")
    rp.add_argument("session")
    rp.add_argument("--speed", type=parse_speed, default=1.0,
                    help="playback speed: 2 is twice as fast, max as fast as possible")
    rp.add_argument("--headless", action="store_true", help="no dashboard: progress lines")

    ls = sub.add_parser("sessions", help="list recorded sessions")
    ls.add_argument("dir", nargs="?", default="sessions")

    sub.add_parser("doctor", help="what this machine can measure and control, and why not")
    sub.add_parser("restore", help="put back a GPU power limit a killed run left behind")
    return p


def _default_session_path(workload: str, engine: str) -> Path:
    stem = Path(workload).stem if workload.endswith(".toml") else workload
    return Path("sessions") / f"{stem}-{engine}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"


def _run(args: argparse.Namespace) -> int:
    from app.core import knobs as knobmod
    from app.core.clock import run_async
    from app.core.runner import ConfigError, RunConfig, RunError, Runner
    from app.headless import HeadlessPrinter, summary_lines
    from workloads import WorkloadError, create

    if args.fast and args.engine != "sim":
        raise UsageError("--fast runs on virtual time and needs --engine sim")
    try:
        schedule = [knobmod.parse_at(a) for a in args.at]
    except knobmod.KnobError as exc:
        raise UsageError(str(exc)) from None
    gpus = None
    if args.gpus:
        try:
            gpus = [int(x) for x in args.gpus.split(",")]
        except ValueError:
            raise UsageError(f"--gpus {args.gpus!r}: expected indices like 0,1") from None
    engine_options: dict[str, Any] = dict(args.engine_opt)
    if args.model:
        engine_options["model"] = args.model
    if args.url:
        engine_options["url"] = args.url
    if args.gpu_spec:
        engine_options["gpu"] = args.gpu_spec
    session = Path(args.session) if args.session else _default_session_path(args.workload,
                                                                             args.engine)
    if session.exists():
        raise UsageError(f"session file {session} already exists")
    try:
        workload = create(args.workload, dict(args.param))
    except WorkloadError as exc:
        raise UsageError(str(exc)) from None
    import engines

    if args.engine not in engines.names():
        raise UsageError(f"unknown engine {args.engine!r} (choose from {', '.join(engines.names())})")
    config = RunConfig(
        workload=args.workload, workload_params=dict(args.param), engine=args.engine,
        engine_options=engine_options, meters=args.meter or ["auto"], gpus=gpus,
        batch_limit=args.batch_limit, power_cap_w=args.power_cap,
        allow_power_cap=args.allow_power_cap, max_tokens=args.max_tokens, rate=args.rate,
        duration_s=args.duration, workflows=args.workflows, seed=args.seed,
        session_path=session, fast=args.fast, schedule=schedule,
        request_timeout_s=args.request_timeout, poll_interval_s=args.poll_interval,
    )
    from app.ui.terminal import has_terminal

    if not args.headless and not has_terminal():
        print("wattflow: no terminal for the dashboard; running headless", file=sys.stderr)
        args.headless = True
    runner = Runner(config, workload)
    if args.headless:
        printer = HeadlessPrinter(runner.stats)
        runner.bus.subscribe(printer.on_event)

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        terminated = False

        def on_signal(sig: int) -> None:
            nonlocal terminated
            terminated = sig != signal.SIGINT
            name = "Ctrl-C" if sig == signal.SIGINT else signal.Signals(sig).name
            runner.request_stop("interrupted", f"stopped by {name}")

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, on_signal, sig)
        outcome = await runner.run()
        return outcome, terminated

    try:
        if args.headless:
            outcome, terminated = run_async(main(), virtual=args.fast)
        else:
            from app.ui.live import run_dashboard

            outcome, terminated = run_dashboard(runner, virtual=args.fast)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except RunError as exc:
        print(f"wattflow: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if outcome.config_error:
        raise UsageError(outcome.message)
    for line in summary_lines(outcome.summary):
        print(line)
    print(f"session: {outcome.session_path}")
    if outcome.reason == "failed":
        print(f"wattflow: run failed: {outcome.message}", file=sys.stderr)
        return EXIT_FAILED
    if outcome.reason == "interrupted":
        print(f"wattflow: {outcome.message}; session closed", file=sys.stderr)
        return EXIT_FAILED if terminated else EXIT_OK
    return EXIT_OK


_COMMANDS = {
    "replay": "app.commands.replay",
    "report": "app.commands.report",
    "sessions": "app.commands.sessions",
    "doctor": "app.commands.doctor",
    "restore": "app.commands.restore",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    try:
        if args.command == "run":
            return _run(args)
        module = importlib.import_module(_COMMANDS[args.command])
        return int(module.run(args))
    except UsageError as exc:
        print(f"wattflow: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("wattflow: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _entry() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
