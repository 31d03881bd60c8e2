"""dcgm-exporter's `/metrics` for the simulated GPUs.

Written by hand rather than through prometheus_client, because dcgm-exporter's
exposition differs from what that library writes: its energy counter is declared a
`counter` without the `_total` suffix the library would add. Names, units, help texts
and labels (`gpu`, `UUID`, `pci_bus_id`, `device`, `modelName`, `Hostname`,
`DCGM_FI_DRIVER_VERSION`) are those of dcgm-exporter's default counters
(etc/default-counters.csv): power in W, energy in mJ since boot, framebuffer in MiB,
clocks in MHz, utilization in %.

dcgm-exporter reads the GPUs every collection interval (`-c`, 30 000 ms by default) and
serves the last reading to every scrape; `Collector` does the same with the twin, so a
scraper sees values as old as a real exporter's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from app.core.events import Sample

DRIVER_VERSION = "580.159.04"

# (metric, type, help, Sample field or None for the derived FB_FREE)
FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", "sm_clock_mhz"),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", "temp_c"),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", "power_w"),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter",
     "Total energy consumption since boot (in mJ).", "energy_mj"),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", "util_pct"),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", "fb_free_mib"),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", "mem_used_mib"),
    ("DCGM_FI_DEV_POWER_MGMT_LIMIT", "gauge", "Power management limit (in W).",
     "power_limit_w"),
)


@dataclass(slots=True)
class GpuLabels:
    index: int
    uuid: str
    model_name: str
    hostname: str

    def text(self) -> str:
        return (f'gpu="{self.index}",UUID="{self.uuid}",'
                f'pci_bus_id="00000000:{0x18 + 0x10 * self.index:02X}:00.0",'
                f'device="nvidia{self.index}",modelName="{_escape(self.model_name)}",'
                f'Hostname="{_escape(self.hostname)}",DCGM_FI_DRIVER_VERSION="{DRIVER_VERSION}"')


def gpu_uuid(hostname: str, port: int, index: int) -> str:
    """Stable for one server (host, port, GPU index), distinct across servers."""
    return "GPU-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"wattflow-sim://{hostname}:{port}/{index}"))


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(s: Sample, name: str, fb_total_mib: float) -> float | None:
    if name == "fb_free_mib":
        return None if s.mem_used_mib is None else max(0.0, fb_total_mib - s.mem_used_mib)
    v = getattr(s, name)
    return None if v is None else float(v)


def exposition(readings: list[tuple[GpuLabels, Sample, float]]) -> str:
    """The text of dcgm-exporter's page for these (labels, reading, framebuffer MiB)."""
    lines: list[str] = []
    for metric, kind, help_text, field in FIELDS:
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} {kind}")
        for labels, s, fb_total in readings:
            v = _value(s, field, fb_total)
            if v is None:
                continue
            # Integers as dcgm-exporter writes them, except power (it writes decimals).
            text = f"{v:.3f}" if metric == "DCGM_FI_DEV_POWER_USAGE" else str(round(v))
            lines.append(f"{metric}{{{labels.text()}}} {text}")
    return "\n".join(lines) + "\n"
