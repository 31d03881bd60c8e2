"""FakeExporter: a real HTTP server on loopback serving whatever Prometheus text page a
test sets (`page`), to show the remote meters odd pages: a counter that goes back,
power without an energy counter, node_exporter's RAPL series, garbage; `status` makes
it answer an HTTP error instead."""

from __future__ import annotations

import socket

from aiohttp import web


class FakeExporter:
    def __init__(self, page: str = "") -> None:
        self.page = page
        self.status = 200
        self.scrapes = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    async def start(self) -> FakeExporter:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        if self.status != 200:
            return web.Response(status=self.status, text="no")
        return web.Response(text=self.page, content_type="text/plain")


def dcgm_page(energy_mj: float | None, power_w: float, host: str = "n1", gpu: int = 0) -> str:
    """A dcgm-exporter page of one GPU, as it writes it."""
    labels = (f'gpu="{gpu}",UUID="GPU-0000{gpu}",device="nvidia{gpu}",'
              f'modelName="NVIDIA H100 80GB HBM3",Hostname="{host}"')
    lines = ["# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).",
             "# TYPE DCGM_FI_DEV_POWER_USAGE gauge",
             f"DCGM_FI_DEV_POWER_USAGE{{{labels}}} {power_w}"]
    if energy_mj is not None:
        lines += ["# HELP DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION Total energy consumption since "
                  "boot (in mJ).",
                  "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter",
                  f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{labels}}} {energy_mj:.0f}"]
    return "\n".join(lines) + "\n"


def rapl_page(package_j: float, dram_j: float) -> str:
    """node_exporter's RAPL counters of one package."""
    return (
        "# HELP node_rapl_package_joules_total Current RAPL package value in joules\n"
        "# TYPE node_rapl_package_joules_total counter\n"
        f'node_rapl_package_joules_total{{index="0",path="/sys/class/powercap/intel-rapl:0"}}'
        f" {package_j}\n"
        "# HELP node_rapl_dram_joules_total Current RAPL dram value in joules\n"
        "# TYPE node_rapl_dram_joules_total counter\n"
        f'node_rapl_dram_joules_total{{index="0",path="/sys/class/powercap/intel-rapl:0:0"}}'
        f" {dram_j}\n"
        "# HELP node_rapl_core_joules_total Current RAPL core value in joules\n"
        "# TYPE node_rapl_core_joules_total counter\n"
        f'node_rapl_core_joules_total{{index="0",path="/sys/class/powercap/intel-rapl:0:1"}}'
        f" {package_j / 2}\n"
    )
