"""`wattflow` command line. Exit codes: 0 done, 1 the run failed, 2 usage or input error."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from app.core.poller import MAX_POLL_INTERVAL_S, MIN_POLL_INTERVAL_S

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A user mistake: printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage block: scripts and people both read the first line.
        self.exit(EXIT_USAGE, f"wattflow: error: {message} (see '{self.prog} --help')\n")


def _number(kind: type[float] | type[int], lo: float, hi: float, *, lo_open: bool = False,
            unit: str = "", why: str = "") -> Any:
    """An argparse type: a finite number in [lo, hi] (or (lo, hi] with `lo_open`).
    argparse puts the flag's name in front of the message."""
    from app.core.options import format_number as num

    rng = (f"{num(lo)}-{num(hi)}{unit}" if not lo_open
           else f"more than {num(lo)}{unit}, up to {num(hi)}{unit}")

    def conv(text: str) -> float | int:
        try:
            v = kind(text)
        except ValueError:
            want = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {want} (range {rng})") from None
        if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
            raise argparse.ArgumentTypeError(
                f"{text} is out of range ({rng}){'; ' + why if why else ''}")
        return v

    return conv


MAX_DURATION_S = 10_000_000.0  # about 115 days


def _knob_number(name: str) -> Any:
    """An argparse type for a knob's starting value: the knob's own bounds, the same
    ones `k`, `--at` and sweeps check."""
    from app.core import knobs as knobmod

    spec = knobmod.SPECS[name]

    def conv(text: str) -> float | int | None:
        try:
            v = knobmod.parse_value(name, text)
        except knobmod.KnobError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{name}: ")) from None
        if v is None:
            raise argparse.ArgumentTypeError(f"needs a value ({spec.range_text()})")
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


def _grid(text: str) -> tuple[str, list[float | None]]:
    from app.core import knobs as knobmod

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KNOB=V1,V2,...")
    name, values = text.split("=", 1)
    try:
        parsed = [knobmod.parse_value(name.strip(), v) for v in values.split(",")]
    except knobmod.KnobError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name.strip(), parsed


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", default="composite",
                   help="composite (default), sequential, interactive, agentic, or FILE.toml"
                        " (docs/workflows.md)")
    p.add_argument("-p", "--param", action="append", type=_param, default=[], metavar="KEY=VALUE",
                   help="workload parameter, e.g. -p variant=mapreduce -p chunks=15")
    p.add_argument("--engine", default="sim", help="sim (default), vllm, openai, parrot")
    p.add_argument("-E", "--engine-opt", action="append", type=_param, default=[],
                   metavar="KEY=VALUE",
                   help="engine option, e.g. -E api=chat -E timeout_s=30 -E max_num_seqs=256")
    p.add_argument("--model", default=None, help="model name or folder (engine-specific)")
    p.add_argument("--url", action="append", default=None,
                   help="server URL for openai/parrot engines; repeat for several endpoints"
                        " (openai: docs/fleet.md)")
    p.add_argument("--gpu", dest="gpu_spec", default=None,
                   help="simulated GPU for the sim engine: h100 (default), h200 or a100")
    p.add_argument("--meter", action="append", default=None,
                   help="auto (default), sim, nvml, rapl, dcgm, prometheus or none; repeatable")
    p.add_argument("-M", "--meter-opt", action="append", type=_param, default=[],
                   metavar="KEY=VALUE",
                   help="meter option, e.g. -M dcgm_url=http://node-a:9400/metrics (a key"
                        " given twice makes a list; docs/fleet.md)")
    p.add_argument("--gpus", default=None, help="GPU indices to measure, e.g. 0,1")
    p.add_argument("--poll-interval", default=None, metavar="SECONDS",
                   type=_number(float, MIN_POLL_INTERVAL_S, MAX_POLL_INTERVAL_S, unit=" s",
                                why="GPU power readings update every 0.1 s, so faster"
                                    " polling only costs CPU"),
                   help="meter polling interval, 0.01-60 s (default: each meter's, e.g. 0.05 s"
                        " for NVML)")
    p.add_argument("--batch-limit", default=64, type=_knob_number("batch_limit"),
                   metavar="N", help="requests in flight at most, 1-65536 (default 64; live knob)")
    p.add_argument("--power-cap", default=None, type=_knob_number("power_cap"),
                   metavar="W", help="GPU power cap in W, within the GPU's own range (live knob)")
    p.add_argument("--allow-power-cap", action="store_true",
                   help="allow changing a real GPU's power limit (restored at exit)")
    p.add_argument("--max-tokens", default=None, type=_knob_number("max_tokens"),
                   metavar="N", help="cap on output tokens per call, 1-1000000 (live knob)")
    p.add_argument("--rate", default=None, type=_knob_number("rate"),
                   metavar="R", help="workflow arrivals per second, Poisson, up to 10000 (default: the"
                        " workload's own; live knob)")
    p.add_argument("--max-backlog", type=_number(int, 1, 1_000_000), default=1000, metavar="N",
                   help="workflows waiting for admission beyond which new arrivals are shed,"
                        " counted and reported (open loop; default 1000)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--duration", default=None, type=_number(float, 0, MAX_DURATION_S,
                                                               lo_open=True, unit=" s"),
                      metavar="S", help="seconds to run (measured window; requests in the engine"
                           " then drain, at most 30 s)")
    stop.add_argument("--workflows", type=_number(int, 1, 1_000_000_000), default=None,
                      metavar="N", help="number of workflows to run")
    p.add_argument("--seed", type=_number(int, 0, 2**63 - 1), default=0, metavar="N",
                   help="seed of prompts, lengths and arrivals (default 0)")
    p.add_argument("--session", default=None, metavar="PATH",
                   help="session file; must not exist (default: a new sessions/NAME.jsonl)")
    p.add_argument("--compress", action="store_true",
                   help="compress the session when it closes: NAME.jsonl.zst, read by every"
                        " command (also implied by a --session name ending in .zst)")
    p.add_argument("--thin", default=0.0, metavar="SECONDS",
                   type=_number(float, 0, 3600, unit=" s"),
                   help="for long runs: record at most one meter sample per device and one"
                        " engine-state line every SECONDS (every request, stage, workflow"
                        " and knob line is kept; default 0: everything)")
    p.add_argument("--headless", action="store_true", help="no dashboard: progress lines")
    p.add_argument("--fast", action="store_true",
                   help="virtual time: as fast as the machine allows (sim engine only)")
    p.add_argument("--at", action="append", default=[], metavar="SECONDS:KNOB=VALUE",
                   help="change a knob mid-run, e.g. --at 60:power_cap=300; repeatable")
    p.add_argument("--request-timeout", default=None,
                   type=_number(float, 0, 86_400, lo_open=True, unit=" s"),
                   metavar="S", help="seconds before a request is failed (up to 86400)")
    p.add_argument("--autopilot", default=None, metavar="OBJECTIVE",
                   help="turn the knobs to meet a latency objective at the least energy, "
                        "e.g. ttft_p90=2s,tpot_p90=80ms (docs/autopilot.md)")
    p.add_argument("--autopilot-bound", action="append", default=[], metavar="KNOB=LO..HI",
                   help="keep the autopilot inside these bounds, e.g. power_cap=300..700; "
                        "naming max_num_seqs lets it restart the engine; repeatable")
    p.add_argument("--autopilot-prior", action="append", default=[], metavar="PATH",
                   help="warm-start the autopilot from a sweep: its folder (or sessions); "
                        "it starts from the best setting that met the objective at the "
                        "offered load; repeatable")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="wattflow", description=__doc__)
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    r = sub.add_parser("run", help="run a workload against an engine, measured and recorded")
    _add_run_arguments(r)

    sw = sub.add_parser("sweep", help="run a grid of knob values headless, one session each")
    _add_run_arguments(sw)
    sw.add_argument("--grid", action="append", type=_grid, default=[], metavar="KNOB=V1,V2,...",
                    help="knob values to sweep, e.g. --grid batch_limit=1,4,16,64"
                         " --grid power_cap=700,450; repeatable (the product is run)")
    sw.add_argument("--dir", default=None,
                    help="folder for the sessions (default sessions/sweep-TIMESTAMP)")
    sw.add_argument("--plot", default=None, metavar="DIR",
                    help="write the study's figures (J/token, tokens/s, p90 latency against"
                         " each swept knob) as PNG, with the CSV behind each, into DIR")

    rep = sub.add_parser("report", help="tables of a recorded session (or compare several)")
    rep.add_argument("sessions", nargs="+")
    rep.add_argument("--csv", default=None)
    rep.add_argument("--json", action="store_true")
    rep.add_argument("--plot", default=None, metavar="PNG")
    rep.add_argument("--exact", action="store_true",
                     help="exact quantiles recomputed from the file (default: within 1%%)")

    from app.commands.replay import add_arguments as replay_arguments

    replay_arguments(sub.add_parser("replay", help="play a recorded session back (or two"
                                    " side by side, or follow one being recorded)"), _number)

    ls = sub.add_parser("sessions", help="list recorded sessions")
    ls.add_argument("dir", nargs="?", default="sessions")

    cat = sub.add_parser("cat", help="a session's records whole, one JSON line each (for jq)")
    cat.add_argument("sessions", nargs="+")

    sub.add_parser("doctor", help="what this machine can measure and control, and why not")
    sub.add_parser("restore", help="put back a GPU power limit a killed run left behind")

    from app.commands.serve import add_arguments as serve_arguments

    serve_arguments(sub.add_parser("serve", help="the simulated twin as an OpenAI-compatible"
                                   " server with vLLM and dcgm-exporter /metrics"),
                    _number, _param)
    cal = sub.add_parser("calibrate", help="fit the simulated twin to sessions recorded on a"
                                           " real GPU; writes a profile for -E profile=")
    importlib.import_module("app.commands.calibrate").add_arguments(cal)
    return p


def _default_session_path(workload: str, engine: str) -> Path:
    stem = Path(workload).stem if workload.endswith(".toml") else workload
    return Path("sessions") / f"{stem}-{engine}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"


def _config(args: argparse.Namespace, session: Path) -> tuple[Any, Any]:
    """RunConfig and workload from `run`/`sweep` arguments; UsageError for bad input."""
    from app.core import knobs as knobmod
    from app.core.runner import RunConfig
    from workloads import WorkloadError, create

    if args.fast and args.engine != "sim":
        raise UsageError("--fast runs on virtual time and needs --engine sim")
    try:
        schedule = [knobmod.parse_at(a) for a in args.at]
    except knobmod.KnobError as exc:
        raise UsageError(str(exc)) from None
    for text, change in zip(args.at, schedule, strict=True):
        if args.duration is not None and change.at_s >= args.duration:
            raise UsageError(f"--at {text}: {change.at_s:g} s is not before the end of the run"
                             f" (--duration {args.duration:g})")
    if args.autopilot_bound and args.autopilot is None:
        raise UsageError("--autopilot-bound needs --autopilot OBJECTIVE")
    if args.autopilot_prior and args.autopilot is None:
        raise UsageError("--autopilot-prior needs --autopilot OBJECTIVE")
    for text in args.autopilot_prior:
        if not Path(text).exists():
            raise UsageError(f"--autopilot-prior {text}: no such file or directory")
    if args.autopilot is not None:
        from app.core.autopilot.objective import AutopilotError, parse_objective
        from app.core.autopilot.params import params_from
        from app.core.autopilot.prior import read_prior

        try:
            objective = parse_objective(args.autopilot)
            params = params_from(args.autopilot_bound)
            if args.autopilot_prior:
                # Before anything starts (the run reads the same, once).
                read_prior(args.autopilot_prior, objective, params)
        except AutopilotError as exc:
            raise UsageError(str(exc)) from None
    gpus = None
    if args.gpus:
        try:
            gpus = [int(x) for x in args.gpus.split(",")]
        except ValueError:
            raise UsageError(f"--gpus {args.gpus!r}: expected indices like 0,1") from None
        if any(not 0 <= g < 1024 for g in gpus) or len(set(gpus)) != len(gpus):
            raise UsageError(f"--gpus {args.gpus!r}: expected distinct indices 0-1023, like 0,1")
    engine_options: dict[str, Any] = dict(args.engine_opt)
    if args.model:
        engine_options["model"] = args.model
    if args.url:
        engine_options["url"] = args.url[0] if len(args.url) == 1 else list(args.url)
    if args.gpu_spec:
        engine_options["gpu"] = args.gpu_spec
    compress = bool(args.compress)
    if session.suffix == ".zst":  # --session NAME.jsonl.zst: recorded as NAME.jsonl first
        session, compress = session.with_suffix(""), True
    if not getattr(args, "session_default", False):
        for path in (session, *([session.with_name(session.name + ".zst")] if compress else [])):
            if path.exists():
                raise UsageError(f"session file {path} already exists")
    try:
        workload = create(args.workload, dict(args.param))
    except WorkloadError as exc:
        raise UsageError(str(exc)) from None
    if args.autopilot is not None:
        # Before the dashboard opens: a stage the workload does not have is a typo.
        from app.core.autopilot.objective import AutopilotError, parse_objective
        from app.core.autopilot.stages import check_stages

        try:
            check_stages(parse_objective(args.autopilot), workload, args.seed)
        except AutopilotError as exc:
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
        max_backlog=args.max_backlog, session_unique=bool(getattr(args, "session_default", False)),
        autopilot=args.autopilot, autopilot_bounds=list(args.autopilot_bound),
        autopilot_prior=list(args.autopilot_prior),
        meter_options=_meter_options(args.meter_opt),
        session_compress=compress, session_thin_s=args.thin,
    )
    return config, workload


def _meter_options(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """-M KEY=VALUE pairs; a key given again makes a list (several exporters)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            prev = out[key]
            out[key] = [*prev, str(value)] if isinstance(prev, list) else [str(prev), str(value)]
        else:
            out[key] = value
    return out


def _execute(runner: Any, *, headless: bool, fast: bool) -> tuple[Any, bool]:
    """Run to the end under the dashboard or headless. Ctrl-C, SIGTERM and SIGHUP stop
    the run cleanly, within 2 s whatever the load (app/stop_watchdog.py); returns
    (outcome, whether a termination signal stopped it)."""
    from app.core.clock import run_async
    from app.core.runner import ConfigError, RunError
    from app.stop_watchdog import StopWatchdog, signal_name

    terminated = False
    tty_state = None if headless else _save_tty()

    def on_stop(sig: int) -> None:  # on the run's loop
        nonlocal terminated
        terminated = sig != signal.SIGINT
        runner.request_stop("interrupted", f"stopped by {signal_name(sig)}")

    def leave(sig: int, why: str) -> None:
        """Exit now, from the watchdog's thread: the terminal back, one line, the exit
        code a signal-stopped run has."""
        if tty_state is not None:
            _restore_tty(tty_state)
        with contextlib.suppress(OSError):
            os.write(2, f"\nwattflow: stopped by {signal_name(sig)}; {why}\n".encode())
        os._exit(EXIT_OK if sig == signal.SIGINT else EXIT_FAILED)

    def on_emergency(sig: int) -> None:  # the run's loop is stuck
        path = runner.emergency_close("interrupted", f"stopped by {signal_name(sig)}")
        leave(sig, "the run did not stop in time, " + (
            f"session closed: {path}" if path is not None else "nothing was recorded"))

    def on_hard_exit(sig: int) -> None:  # the emergency close itself is stuck
        leave(sig, "the session could not be closed in time and may lack its end record"
                   " (report reads it as after a crash)")

    watchdog = StopWatchdog(on_stop, on_emergency, on_hard_exit)

    async def main() -> Any:
        watchdog.install(asyncio.get_running_loop())
        try:
            return await runner.run()
        finally:
            watchdog.finished()

    try:
        if headless:
            result: tuple[Any, bool] = (run_async(main(), virtual=fast), terminated)
        else:
            from app.ui.live import run_dashboard

            result = run_dashboard(runner, virtual=fast, watchdog=watchdog)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except RunError as exc:
        raise _RunFailed(str(exc)) from None
    finally:
        watchdog.uninstall()
    if result[0].config_error:
        raise UsageError(result[0].message)
    return result


def _save_tty() -> Any:
    try:
        import termios

        return termios.tcgetattr(sys.stdin.fileno())
    except Exception:  # not a terminal, or no termios: nothing to restore
        return None


def _restore_tty(state: Any) -> None:
    """Leave the dashboard's alternate screen and raw mode when the process must exit
    without Textual's own teardown."""
    with contextlib.suppress(Exception):
        import termios

        os.write(sys.stdout.fileno(), b"\x1b[?1000l\x1b[?1003l\x1b[?1006l\x1b[?25h\x1b[?1049l")
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, state)


class _RunFailed(Exception):
    """The run could not start (one line, exit 1)."""


def _exit_code(outcome: Any, terminated: bool) -> int:
    if outcome.reason == "failed":
        where = f" (session: {outcome.session_path})" if outcome.session_path else ""
        print(f"wattflow: run failed: {outcome.message}{where}", file=sys.stderr)
        return EXIT_FAILED
    if outcome.reason == "interrupted":
        global _exit_at_once
        _exit_at_once = True
        print(f"wattflow: {outcome.message}; session closed", file=sys.stderr)
        return EXIT_FAILED if terminated else EXIT_OK
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from app.core.runner import Runner
    from app.headless import HeadlessPrinter, summary_lines
    from app.ui.terminal import has_terminal

    args.session_default = not args.session
    session = Path(args.session) if args.session else _default_session_path(args.workload,
                                                                             args.engine)
    config, workload = _config(args, session)
    if not args.headless and not has_terminal():
        print("wattflow: no terminal for the dashboard; running headless", file=sys.stderr)
        args.headless = True
    runner = Runner(config, workload)
    if args.headless:
        runner.bus.subscribe(HeadlessPrinter(runner.stats).on_event)
    try:
        outcome, terminated = _execute(runner, headless=args.headless, fast=args.fast)
    except _RunFailed as exc:
        print(f"wattflow: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if outcome.session_path is not None:  # else nothing ran: the error line says why
        for line in summary_lines(outcome.summary):
            print(line)
        print(f"session: {outcome.session_path}")
    return _exit_code(outcome, terminated)


def _sweep(args: argparse.Namespace) -> int:
    """Every combination of the --grid values, one headless run and session each, then
    a comparison table. Stops at the first point that was interrupted or failed."""
    import itertools

    from app.commands.report import analyse, comparison_table, make_console
    from app.core.runner import Runner

    if not args.grid:
        raise UsageError("sweep needs at least one --grid KNOB=V1,V2,...")
    if args.duration is None and args.workflows is None:
        raise UsageError("sweep needs --duration or --workflows for each point")
    names = [name for name, _ in args.grid]
    if len(set(names)) != len(names):
        raise UsageError("each knob may appear in one --grid only")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'wattflow[plot]'") from None
        if Path(args.plot).exists() and not Path(args.plot).is_dir():
            raise UsageError(f"--plot {args.plot}: not a folder")
    folder = Path(args.dir) if args.dir else (
        Path("sessions") / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    points = list(itertools.product(*(values for _, values in args.grid)))
    paths: list[Path] = []
    for i, values in enumerate(points, 1):
        label = "-".join(f"{n}={'none' if v is None else f'{v:g}'}" for n, v in zip(names, values,
                                                                                      strict=True))
        config, workload = _config(args, folder / f"{label}.jsonl")
        # Each point's values are the run's starting knob values, set through the
        # knob path like any other change (events with source `sweep`).
        config.start_knobs = dict(zip(names, values, strict=True))
        config.start_knobs_source = "sweep"
        print(f"[{i}/{len(points)}] {label}", flush=True)
        try:
            outcome, terminated = _execute(Runner(config, workload), headless=True, fast=args.fast)
        except UsageError as exc:
            raise UsageError(f"sweep point {label}: {str(exc).removeprefix('--power-cap: ')}"
                             ) from None
        except _RunFailed as exc:
            print(f"wattflow: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        paths.append(outcome.session_path or folder / f"{label}.jsonl")
        s = outcome.summary
        tps, jpt = s.get("tokens_per_s"), s.get("j_per_output_token")
        print(f"    {s.get('requests_finished')} requests, "
              f"{'-' if tps is None else f'{tps:.1f}'} tok/s, "
              f"{'-' if jpt is None else f'{jpt:.4f}'} J/token", flush=True)
        if outcome.reason != "completed":
            return _exit_code(outcome, terminated)
    make_console().print(comparison_table([analyse(p) for p in paths]))
    print(f"sessions: {folder}")
    if args.plot is not None:
        from app.commands.sweep_plot import measure, write_sweep_figures

        measured = [measure(p, dict(zip(names, v, strict=True)))
                    for p, v in zip(paths, points, strict=False)]
        try:
            written = write_sweep_figures(measured, names, Path(args.plot))
        except OSError as exc:
            print(f"wattflow: error: cannot write {args.plot}: {exc.strerror or exc}",
                  file=sys.stderr)
            return EXIT_USAGE
        print(f"figures: {', '.join(str(w) for w in written)}")
    return EXIT_OK


_COMMANDS = {
    "replay": "app.commands.replay",
    "report": "app.commands.report",
    "sessions": "app.commands.sessions",
    "cat": "app.commands.cat",
    "doctor": "app.commands.doctor",
    "restore": "app.commands.restore",
    "serve": "app.commands.serve",
    "calibrate": "app.commands.calibrate",
}


def _join_dash_values(argv: list[str]) -> list[str]:
    """`--at -5:power_cap=300` reaches argparse as `--at=-5:...`, so it gets our own
    one-line error about the time instead of argparse's "expected one argument"."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--at", "-p", "--param", "-E", "--engine-opt", "-M", "--meter-opt") \
                and i + 1 < len(argv) \
                and argv[i + 1].startswith("-") and ("=" in argv[i + 1] or ":" in argv[i + 1]):
            out.append(f"{a}={argv[i + 1]}" if a.startswith("--") else f"{a}{argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_dash_values(list(sys.argv[1:] if argv is None else argv)))
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "sweep":
            return _sweep(args)
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


#: Set when a signal stopped the run: its session is closed and fsynced and the power
#: limit restored, so the process leaves at once. Interpreter teardown after a real
#: engine (CUDA contexts, engine threads) took 1.2-1.6 s on an H200 with transformers,
#: past the 2 s a stopped run is promised.
_exit_at_once = False


def entry() -> NoReturn:
    """The console script: `main()`, then leave (at once after a signal-stopped run)."""
    code = main()
    if _exit_at_once:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
