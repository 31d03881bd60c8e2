"""From exporter series to samples: what the dcgm and prometheus meters share.

A series is (metric name, labels, value). dcgm-exporter's GPU series become one `Sample`
per GPU (device `NODE/gpuN`); node_exporter's RAPL counters (`node_rapl_package_
joules_total`, `node_rapl_dram_joules_total`) one per CPU package and DRAM domain
(`NODE/cpuN`, `NODE/dramN`).

Energy: from the counter where the exporter has one (`DCGM_FI_DEV_TOTAL_ENERGY_
CONSUMPTION`, mJ; the RAPL counters, J), kept monotonic across resets (an exporter or
GPU restart, a RAPL wrap: the count goes on from where it was); else the integral of
the power readings (trapezoids between readings).

Late samples: an exporter reads its devices every collection interval (dcgm-exporter's
`-c`, 30 s by default) and serves the last reading, so a value scraped now was
collected earlier. A reading is taken as new only when it differs from the one scraped
before (else the device is not sampled: the same reading twice would put two
different times on one measurement); it was then collected after the previous scrape
and, with the exporter's interval known, within that interval before now: it is timed
at the middle of that span. The energy attribution waits for every device's reading
past a request's end before giving the request its share, so a late reading delays a
request's record, it does not misplace its energy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from app.core.events import Sample
from meters.base import DeviceInfo

#: dcgm-exporter's metric -> Sample field.
GPU_FIELDS: dict[str, str] = {
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "energy_mj",
    "DCGM_FI_DEV_POWER_USAGE": "power_w",
    "DCGM_FI_DEV_GPU_UTIL": "util_pct",
    "DCGM_FI_DEV_SM_CLOCK": "sm_clock_mhz",
    "DCGM_FI_DEV_FB_USED": "mem_used_mib",
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": "power_limit_w",
    "DCGM_FI_DEV_GPU_TEMP": "temp_c",
}
#: node_exporter's RAPL zone -> component (the package counts its cores: `core` is left out).
RAPL_ZONES = {"package": "cpu", "dram": "dram"}
#: Labels of dcgm-exporter worth keeping with a device.
KEPT_LABELS = ("gpu", "UUID", "device", "modelName", "Hostname", "pci_bus_id", "instance",
               "job")

Series = tuple[str, dict[str, str], float]


def metric_key(name: str) -> str:
    """A series' metric as the tables above name it (the text parser adds `_total` to
    counters; dcgm-exporter's energy counter has none of its own)."""
    if name.endswith("_total") and name.removesuffix("_total") in GPU_FIELDS:
        return name.removesuffix("_total")
    return name


def rapl_zone(name: str) -> str | None:
    """`package` for node_rapl_package_joules_total, None for other metrics."""
    if name.startswith("node_rapl_") and name.endswith("_joules_total"):
        return name[len("node_rapl_"):-len("_joules_total")]
    return None


@dataclass(slots=True)
class Reading:
    device: str
    component: str
    node: str
    labels: dict[str, str] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)


def readings(series: Iterable[Series], node_of: Callable[[dict[str, str]], str],
             extra: dict[str, str] | None = None) -> dict[str, Reading]:
    """Device -> its reading, from one scrape's series; `extra` labels are added to each
    device's (the scrape target's `instance`, as Prometheus adds it)."""
    out: dict[str, Reading] = {}
    for name, labels, value in series:
        key = metric_key(name)
        fieldname = GPU_FIELDS.get(key)
        if fieldname is not None:
            gpu = labels.get("gpu")
            if gpu is None:
                continue
            node = node_of(labels)
            device = f"{node}/gpu{gpu}"
            r = out.get(device)
            if r is None:
                r = out[device] = Reading(device, "gpu", node, {
                    **(extra or {}), **{k: labels[k] for k in KEPT_LABELS if k in labels}})
            r.values[fieldname] = value
            continue
        zone = rapl_zone(name)
        component = RAPL_ZONES.get(zone or "")
        if component is not None:
            node = node_of(labels)
            device = f"{node}/{component}{labels.get('index', '0')}"
            r = out.setdefault(device, Reading(device, component, node, {
                **(extra or {}),
                **{k: labels[k] for k in ("index", "path", "instance", "job") if k in labels}}))
            r.values["energy_mj"] = 1000.0 * value
    return out


@dataclass(slots=True)
class DeviceTrack:
    """One device's readings over the run: its energy kept monotonic, its readings
    timed, stale repeats dropped."""

    device: str
    component: str
    last_key: tuple[float, ...] | None = None
    last_raw_mj: float | None = None
    offset_mj: float = 0.0
    integrated_mj: float = 0.0
    last_power_w: float | None = None
    last_t: float | None = None  # the time given to the last sample
    prev_scrape_t: float | None = None
    change_times: list[float] = field(default_factory=list)  # scrapes that saw a change
    resets: int = 0

    def update(self, r: Reading, meter: str, scrape_t: float,
               exporter_interval_s: float | None) -> Sample | None:
        """The sample of a scrape at `scrape_t`, or None when nothing new was read."""
        v = r.values
        key = tuple(x for kv in sorted(v.items()) for x in kv[1:])
        prev_scrape = self.prev_scrape_t
        self.prev_scrape_t = scrape_t
        if key == self.last_key:
            return None  # not collected again since the last scrape
        self.last_key = key
        self.change_times.append(scrape_t)
        if len(self.change_times) > 64:
            del self.change_times[:32]
        lo = prev_scrape if prev_scrape is not None else scrape_t
        if exporter_interval_s is not None:
            lo = max(lo, scrape_t - exporter_interval_s)
        # Scrapes before the run's clock began (a Prometheus server's, timed before the
        # meter's start) count at their own time for the midpoint; the sample, at 0 at
        # the earliest.
        t = max(0.0, (lo + scrape_t) / 2)
        if self.last_t is not None:
            t = max(t, self.last_t + 1e-6)  # a device's samples go forward in time
        power = v.get("power_w")
        raw = v.get("energy_mj")
        if raw is not None:
            if self.last_raw_mj is not None and raw < self.last_raw_mj:
                # The counter went back: a reset (exporter or GPU restart) or a wrap.
                self.offset_mj += self.last_raw_mj
                self.resets += 1
            self.last_raw_mj = raw
            energy = raw + self.offset_mj
        elif power is not None:
            if self.last_power_w is not None and self.last_t is not None:
                self.integrated_mj += 1000.0 * (t - self.last_t) * (power + self.last_power_w) / 2
            energy = self.integrated_mj
        else:
            energy = None
        if power is not None:
            self.last_power_w = power
        self.last_t = t
        return Sample(t_s=t, meter=meter, device=self.device, component=self.component,
                      energy_mj=energy, power_w=power, util_pct=v.get("util_pct"),
                      mem_used_mib=v.get("mem_used_mib"), sm_clock_mhz=v.get("sm_clock_mhz"),
                      temp_c=v.get("temp_c"), power_limit_w=v.get("power_limit_w"))

    def update_period_s(self) -> float | None:
        """How often the exporter's value changed, as scraped (the mean gap: each gap is
        a whole number of scrape intervals), once there are a few changes."""
        ts = self.change_times
        if len(ts) < 5:
            return None
        return (ts[-1] - ts[0]) / (len(ts) - 1)


def device_info(r: Reading) -> DeviceInfo:
    """What a remote device can read, with its node and labels; never cappable here."""
    channels: list[str] = [k for k in ("energy_mj", "power_w", "util_pct", "mem_used_mib",
                            "sm_clock_mhz", "temp_c", "power_limit_w") if k in r.values]
    if "energy_mj" not in channels and "power_w" in channels:
        channels.insert(0, "energy_mj")  # integrated from power
    return DeviceInfo(
        device=r.device, component=r.component,
        name=r.labels.get("modelName", "") if r.component == "gpu" else r.component,
        channels=channels, power_limit_range_w=None,
        power_limit_w=r.values.get("power_limit_w"), node=r.node, labels=dict(r.labels))
