"""`wattflow serve`: the simulated twin as an OpenAI-compatible HTTP server.

Serves until Ctrl-C or SIGTERM, then stops cleanly: no new requests, answers in flight
end with an error event, the port is released, exit 0. docs/serve.md says more.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(p: argparse.ArgumentParser, number: Any, param: Any) -> None:
    """The flags of `serve` (app/cli.py passes its number and KEY=VALUE parsers)."""
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=number(int, 0, 65535), default=8000,
                   help="port, 0-65535 (default 8000; 0: any free port, printed at start)")
    p.add_argument("--gpu", dest="gpu_spec", default=None,
                   help="simulated GPU: h100 (default) or a100")
    p.add_argument("--model", default=None, help="simulated model (default llama-3.1-8b)")
    p.add_argument("-E", "--engine-opt", action="append", type=param, default=[],
                   metavar="KEY=VALUE",
                   help="sim engine option, e.g. -E max_num_seqs=256 (see wattflow doctor)")
    p.add_argument("--gpus", type=number(int, 1, 64), default=1, metavar="N",
                   help="simulated GPUs, one model replica each (data parallel), 1-64")
    p.add_argument("--node", default=None, metavar="NAME",
                   help="the Hostname label of the GPU metrics (default: this host's name)")
    p.add_argument("--dcgm-interval", type=number(float, 0, 3600, unit=" s"), default=1.0,
                   metavar="S", help="how often the GPU metrics are collected, as"
                   " dcgm-exporter's -c (default 1 s; 0: at every scrape)")
    p.add_argument("--served-model-name", default=None, metavar="NAME",
                   help="the model name clients ask for (default: the simulated model's)")


def run(args: argparse.Namespace) -> int:
    from engines.base import EngineError
    from engines.sim_server.server import ServeConfig, SimServer

    options: dict[str, Any] = dict(args.engine_opt)
    if args.gpu_spec:
        options["gpu"] = args.gpu_spec
    if args.model:
        options["model"] = args.model
    cfg = ServeConfig(host=args.host, port=args.port, engine_options=options, gpus=args.gpus,
                      hostname=args.node, collect_interval_s=args.dcgm_interval,
                      served_model_name=args.served_model_name)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = SimServer(cfg)
        try:
            await server.start()
        except (EngineError, ValueError) as exc:
            print(f"wattflow: error: {str(exc).splitlines()[0]}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:
            print(f"wattflow: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        gpu = server.replicas[0].labels.model_name
        print(f"wattflow serve: {server.url}/v1 ({cfg.gpus} x {gpu}, simulated; model "
              f"{server.model}); /metrics has vLLM's and dcgm-exporter's metrics; "
              "Ctrl-C stops", flush=True)
        try:
            await stop.wait()
        finally:
            await server.stop()
        print(f"wattflow serve: stopped after {server.requests_total} requests", flush=True)
        return EXIT_OK

    return asyncio.run(main())
