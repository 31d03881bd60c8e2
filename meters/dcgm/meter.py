"""DcgmMeter: scrapes dcgm-exporter pages (one per node) and node_exporter pages.

Targets: `-M dcgm_url=URL` (repeated for several) or `-M dcgm_urls_file=PATH`, else the
openai engine's endpoints' own `/metrics` (where `wattflow serve` has them). Each page
is fetched over HTTP in a small thread pool (the meter is blocking: the poller reads it
from its thread) and parsed with prometheus_client's text parser; series.py turns the
series into samples. Remote GPUs cannot be capped from here (power capping is
local-only): the devices say so.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from app.core.events import Sample
from app.core.options import OptionSchema, option
from meters.base import DeviceInfo, MeterInfo, MeterUnavailable, PowerCapError
from meters.dcgm.series import DeviceTrack, Reading, Series, device_info, readings
from meters.dcgm.targets import TargetError, parse_target, read_targets_file, redacted

DEFAULT_POLL_INTERVAL_S = 1.0
MAX_PAGE_BYTES = 32 * 1024**2
LOCAL_ONLY = "power capping is local-only: a remote GPU's limit is not set from here"


@dataclass(slots=True)
class DcgmOptions:
    dcgm_url: str | list[str] | None = option(
        None, "exporter pages to scrape, URL or NAME=URL (a list for several); unset: the "
        "openai engine's endpoints' /metrics")
    dcgm_urls_file: str | None = option(None, "a file of exporter pages, 'URL [NAME]' a line")
    node_url: str | list[str] | None = option(
        None, "node_exporter pages for CPU/DRAM energy (RAPL), URL or NAME=URL")
    exporter_interval_s: float | None = option(
        None, "the exporters' own collection interval (dcgm-exporter's -c, 30 s by "
        "default); unset: readings are timed by when they change", lo=0)
    poll_interval_s: float = option(DEFAULT_POLL_INTERVAL_S, "scrape this often (s)", lo=0,
                                    lo_open=True)
    scrape_timeout_s: float = option(2.0, "give a page up after this long (s)", lo=0,
                                     lo_open=True)


OPTIONS = OptionSchema.of(DcgmOptions, "dcgm meter", shared=True)


def _as_list(v: str | list[str] | None) -> list[str]:
    return [] if v is None else [v] if isinstance(v, str) else list(v)


def endpoint_pages(engine: Any) -> list[str]:
    """The /metrics pages of an openai engine's endpoints (NAME=URL), if it has any."""
    if engine is None or not hasattr(engine, "info"):
        return []
    details = engine.info().details or {}
    eps = details.get("endpoints")
    if isinstance(eps, list) and eps:
        return [f"{e['name']}={e['url']}" for e in eps if isinstance(e, dict) and e.get("url")]
    url = details.get("url")
    return [url] if isinstance(url, str) and url.startswith("http") else []


@dataclass(slots=True)
class _Target:
    name: str
    url: str
    shown: str
    hostnames: set[str] = field(default_factory=set)
    node_by_label: bool = True  # name nodes by the Hostname label (unique to this target)
    down: str | None = None  # why the last scrape failed
    period_noted: bool = False
    instance: dict[str, str] = field(default_factory=dict)  # {"instance": HOST:PORT}


class DcgmMeter:
    name = "dcgm"
    power_cap_persists = False

    def __init__(self, targets: list[str], *, node_targets: list[str] | None = None,
                 exporter_interval_s: float | None = None,
                 poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
                 scrape_timeout_s: float = 2.0, source: str = "") -> None:
        self._targets = [_Target(n, u, redacted(u)) for n, u in
                         (parse_target(t, "dcgm meter") for t in targets)]
        self._targets += [_Target(n, u, redacted(u), node_by_label=False) for n, u in
                          (parse_target(t, "dcgm meter") for t in node_targets or [])]
        for tgt in self._targets:
            tgt.instance = {"instance": urlsplit(tgt.shown).netloc}
        if not self._targets:
            raise TargetError("dcgm meter: no exporter to scrape (give -M dcgm_url=URL)")
        self.exporter_interval_s = exporter_interval_s
        self.poll_interval_s = poll_interval_s
        self.scrape_timeout_s = scrape_timeout_s
        self._source = source
        self._tracks: dict[str, DeviceTrack] = {}
        self._devices: dict[str, DeviceInfo] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._next_t: float | None = None
        self._errors: deque[str] = deque()
        self._notes: deque[str] = deque()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> DcgmMeter:
        o = OPTIONS.build(options)
        targets = _as_list(o.dcgm_url)
        if o.dcgm_urls_file:
            targets += read_targets_file(o.dcgm_urls_file, "dcgm meter")
        source = "given"
        if not targets and not o.node_url:
            targets = endpoint_pages(options.get("engine"))
            source = "the engine's endpoints"
        return cls(targets, node_targets=_as_list(o.node_url),
                   exporter_interval_s=o.exporter_interval_s,
                   poll_interval_s=o.poll_interval_s, scrape_timeout_s=o.scrape_timeout_s,
                   source=source)

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        if self._pool is not None:
            return
        self._pool = ThreadPoolExecutor(max_workers=min(16, len(self._targets)),
                                        thread_name_prefix="wattflow-dcgm")
        pages = self._fetch_all()
        found = 0
        reasons: list[str] = []
        for tgt, page in zip(self._targets, pages, strict=True):
            if isinstance(page, str):
                reasons.append(f"{tgt.shown}: {page}")
                continue
            for _, labels, _ in page:
                if "Hostname" in labels:
                    tgt.hostnames.add(labels["Hostname"])
        # A Hostname label seen from two targets (two exporters on one host, or servers
        # that do not set it) cannot name a node: those targets are named by their own.
        seen: dict[str, int] = {}
        for tgt in self._targets:
            for h in tgt.hostnames:
                seen[h] = seen.get(h, 0) + 1
        for tgt in self._targets:
            if len(tgt.hostnames) != 1 or any(seen[h] > 1 for h in tgt.hostnames):
                tgt.node_by_label = False
        for tgt, page in zip(self._targets, pages, strict=True):
            if isinstance(page, str):
                continue
            got = readings(page, self._node_namer(tgt), tgt.instance)
            if not got:
                reasons.append(f"{tgt.shown}: no DCGM_FI_DEV_* or node_rapl_* series")
            for r in got.values():
                self._add_device(r)
            found += len(got)
        if not found:
            self.close()
            raise MeterUnavailable("dcgm: nothing to read: " + "; ".join(reasons))
        self._notes.extend(f"dcgm: {why} (scraped again at every poll)" for why in reasons)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def info(self) -> MeterInfo:
        interval = ("unknown: readings are timed by when they change" if
                    self.exporter_interval_s is None else f"{self.exporter_interval_s:g} s")
        notes = [
            f"dcgm: scraping {len(self._targets)} page(s) every {self.poll_interval_s:g} s"
            f" ({self._source or 'given'}): " + ", ".join(
                f"{t.name}={t.shown}" for t in self._targets),
            f"exporter collection interval: {interval} (dcgm-exporter collects every 30 s "
            "unless started with -c 1000 for 1 s); a reading is up to that old",
            LOCAL_ONLY,
        ]
        return MeterInfo(name=self.name, devices=list(self._devices.values()), blocking=True,
                         poll_interval_s=self.poll_interval_s, notes=notes)

    # -- reading ---------------------------------------------------------------------
    def _node_namer(self, tgt: _Target) -> Any:
        if tgt.node_by_label:
            return lambda labels: labels.get("Hostname") or tgt.name
        return lambda labels: tgt.name

    @staticmethod
    def _label(tgt: _Target) -> str:
        """The target as messages name it: its node(s), then where it is."""
        if tgt.node_by_label and tgt.hostnames:
            return f"{', '.join(sorted(tgt.hostnames))} ({tgt.shown})"
        return f"{tgt.name} ({tgt.shown})" if tgt.name not in tgt.shown else tgt.shown

    def _add_device(self, r: Reading) -> None:
        if r.device not in self._devices:
            self._devices[r.device] = device_info(r)
            self._tracks[r.device] = DeviceTrack(r.device, r.component)

    def _fetch(self, url: str) -> list[Series] | str:
        """The page's series, or why not (one line)."""
        try:
            req = urllib.request.Request(url, headers={"Accept": "text/plain"})
            with urllib.request.urlopen(req, timeout=self.scrape_timeout_s) as resp:
                raw = resp.read(MAX_PAGE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except urllib.error.URLError as exc:
            reason = exc.reason
            return f"unreachable ({getattr(reason, 'strerror', None) or reason})"
        except (TimeoutError, OSError) as exc:
            return f"unreachable ({type(exc).__name__})"
        if len(raw) > MAX_PAGE_BYTES:
            return f"page larger than {MAX_PAGE_BYTES // 1024**2} MiB"
        try:
            text = raw.decode("utf-8")
            return [(s.name, s.labels, float(s.value))
                    for fam in text_string_to_metric_families(text) for s in fam.samples]
        except (ValueError, UnicodeDecodeError, TypeError) as exc:
            return f"not a Prometheus text page ({str(exc).splitlines()[0][:120]})"

    def _fetch_all(self) -> list[list[Series] | str]:
        assert self._pool is not None
        return list(self._pool.map(lambda t: self._fetch(t.url), self._targets))

    def sample(self, t_s: float) -> list[Sample]:
        if self._next_t is not None and t_s < self._next_t:
            return []  # the poller's thread runs at the fastest meter's pace
        self._next_t = t_s + self.poll_interval_s
        return self._scrape(t_s)

    def sample_final(self, t_s: float) -> list[Sample]:
        return self._scrape(t_s)

    def _scrape(self, t_s: float) -> list[Sample]:
        if self._pool is None:
            return []
        t0 = time.monotonic()
        pages = self._fetch_all()
        # The pages were read between t_s and now: a scrape's time is the middle.
        scrape_t = t_s + (time.monotonic() - t0) / 2
        out: list[Sample] = []
        for tgt, page in zip(self._targets, pages, strict=True):
            if isinstance(page, str):
                if tgt.down is None:
                    self._errors.append(f"dcgm: {self._label(tgt)} {page}; its devices"
                                        " are not read until it answers")
                tgt.down = page
                continue
            if tgt.down is not None:
                self._notes.append(f"dcgm: {self._label(tgt)} answers again")
                tgt.down = None
            for r in readings(page, self._node_namer(tgt), tgt.instance).values():
                self._add_device(r)
                track = self._tracks[r.device]
                s = track.update(r, self.name, scrape_t, self.exporter_interval_s)
                if s is not None:
                    out.append(s)
            self._note_period(tgt)
        return out

    def _note_period(self, tgt: _Target) -> None:
        if tgt.period_noted:
            return
        for dev, track in self._tracks.items():
            info = self._devices[dev]
            if track.component != "gpu" or info.node not in (tgt.name, *tgt.hostnames):
                continue
            period = track.update_period_s()
            if period is not None:
                tgt.period_noted = True
                self._notes.append(f"dcgm: {self._label(tgt)}: readings change about every "
                                   f"{period:.2g} s (its collection interval, or this "
                                   "meter's scrape interval if longer)")
            return

    def drain_errors(self) -> list[str]:
        out = list(self._errors)
        self._errors.clear()
        return out

    def drain_notes(self) -> list[str]:
        out = list(self._notes)
        self._notes.clear()
        return out

    def set_power_limit(self, device: str, watts: float) -> None:
        raise PowerCapError(f"{device}: {LOCAL_ONLY}")
