"""PrometheusMeter: the dcgm meter's series (dcgm-exporter's GPU metrics, node_exporter's
RAPL counters), asked of a Prometheus server's HTTP API instead of the exporters.

Each poll makes two instant queries (`GET /api/v1/query`): the values of every wanted
series, and `timestamp()` of the energy counters, which says when Prometheus scraped
them; a reading is then placed on the run's clock that much before the query (the two
machines' clocks are taken to agree). Answers are JSON (orjson), not text to match.
`prometheus_selector` narrows the series (`job="dcgm-exporter"`). Nodes are named by
dcgm-exporter's `Hostname` label, else Prometheus' `instance`.
"""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from app.core.events import Sample
from app.core.options import OptionSchema, option
from meters.base import DeviceInfo, MeterInfo, MeterUnavailable, PowerCapError
from meters.dcgm.series import GPU_FIELDS, RAPL_ZONES, DeviceTrack, Series, device_info, readings
from meters.dcgm.targets import TargetError, redacted

DEFAULT_POLL_INTERVAL_S = 2.0
LOCAL_ONLY = "power capping is local-only: a remote GPU's limit is not set from here"
_ENERGY = ["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
           *(f"node_rapl_{z}_joules_total" for z in RAPL_ZONES)]
_WANTED = [*GPU_FIELDS, *(f"node_rapl_{z}_joules_total" for z in RAPL_ZONES)]


@dataclass(slots=True)
class PrometheusOptions:
    prometheus_url: str | None = option(None, "the Prometheus server, http(s)://HOST:PORT "
                                        "(its HTTP API is under /api/v1)")
    prometheus_selector: str = option("", "label matchers added to every query, e.g. "
                                      "job=\"dcgm\",Hostname=~\"node-.*\"")
    exporter_interval_s: float | None = option(
        None, "the exporters' own collection interval (dcgm-exporter's -c, 30 s by "
        "default); unset: readings are timed by when they change", lo=0)
    poll_interval_s: float = option(DEFAULT_POLL_INTERVAL_S, "query this often (s)", lo=0,
                                    lo_open=True)
    scrape_timeout_s: float = option(5.0, "give a query up after this long (s)", lo=0,
                                     lo_open=True)


OPTIONS = OptionSchema.of(PrometheusOptions, "prometheus meter", shared=True)


class QueryError(RuntimeError):
    """A query failed; one line."""


def _selector(names: list[str], extra: str) -> str:
    alternatives = "|".join(names)
    return "{" + f'__name__=~"{alternatives}"' + (f",{extra}" if extra else "") + "}"


class PrometheusMeter:
    name = "prometheus"
    power_cap_persists = False

    def __init__(self, url: str | None, *, selector: str = "",
                 exporter_interval_s: float | None = None,
                 poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
                 scrape_timeout_s: float = 5.0) -> None:
        if not url:
            raise TargetError("prometheus: give the server with -M prometheus_url=http://HOST:9090")
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TargetError(f"prometheus: prometheus_url must be http(s)://HOST:PORT, got {url!r}")
        self.url = url.strip().rstrip("/")
        self.shown = redacted(self.url)
        self.selector = selector.strip().strip("{}")
        self.exporter_interval_s = exporter_interval_s
        self.poll_interval_s = poll_interval_s
        self.timeout_s = scrape_timeout_s
        self._tracks: dict[str, DeviceTrack] = {}
        self._devices: dict[str, DeviceInfo] = {}
        self._next_t: float | None = None
        self._opened = False
        self._down: str | None = None
        self._errors: deque[str] = deque()
        self._notes: deque[str] = deque()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> PrometheusMeter:
        o = OPTIONS.build(options)
        return cls(o.prometheus_url, selector=o.prometheus_selector,
                   exporter_interval_s=o.exporter_interval_s, poll_interval_s=o.poll_interval_s,
                   scrape_timeout_s=o.scrape_timeout_s)

    # -- the API ---------------------------------------------------------------------
    def _query(self, promql: str) -> tuple[float, list[dict[str, Any]]]:
        """(evaluation time, result vector) of an instant query."""
        q = urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}",
                                        timeout=self.timeout_s) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            detail = ""
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, OSError):
                detail = ": " + str(orjson.loads(exc.read()).get("error", ""))[:160]
            raise QueryError(f"HTTP {exc.code}{detail}") from None
        except urllib.error.URLError as exc:
            raise QueryError(f"unreachable ({getattr(exc.reason, 'strerror', None) or exc.reason})"
                             ) from None
        except (TimeoutError, OSError) as exc:
            raise QueryError(f"unreachable ({type(exc).__name__})") from None
        try:
            obj = orjson.loads(body)
            if obj.get("status") != "success":
                raise QueryError(f"query failed: {str(obj.get('error', obj))[:160]}")
            data = obj["data"]
            if data.get("resultType") != "vector":
                raise QueryError(f"expected a vector, got {data.get('resultType')!r}")
            result = data["result"]
            evaluated = max((float(r["value"][0]) for r in result), default=time.time())
            return evaluated, result
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError,
                AttributeError) as exc:
            raise QueryError(f"not a Prometheus API answer ({type(exc).__name__})") from None

    def _stamps(self) -> dict[frozenset[tuple[str, str]], tuple[float, float]] | None:
        """Each energy counter's (evaluated, scraped) unix times by its labels; None from
        a server that cannot tell them."""
        try:
            _, stamps = self._query("timestamp(" + _selector(_ENERGY, self.selector) + ")")
        except QueryError:
            return None
        out: dict[frozenset[tuple[str, str]], tuple[float, float]] = {}
        for r in stamps:
            try:
                evaluated, scraped = float(r["value"][0]), float(r["value"][1])
            except (ValueError, IndexError, TypeError, KeyError):
                continue
            labels = {str(k): str(v) for k, v in r["metric"].items()}
            out[frozenset(labels.items())] = (evaluated, scraped)
        return out

    def _series(self) -> tuple[list[Series], dict[frozenset[tuple[str, str]], float | None]]:
        """The wanted series now, and each energy counter's age (s) by its labels, told
        from the start of this call. A counter scraped again between the values and its
        time (the two are separate queries) has no age (None): whether the values are
        of the scrape before is not known, and it is read at the next look."""
        start = time.monotonic()
        before = self._stamps() if self._opened else None
        _, values = self._query(_selector(_WANTED, self.selector))
        out: list[Series] = []
        for r in values:
            labels = {str(k): str(v) for k, v in r["metric"].items()}
            name = labels.pop("__name__", "")
            try:
                out.append((name, labels, float(r["value"][1])))
            except (ValueError, IndexError, TypeError):
                continue
        ages: dict[frozenset[tuple[str, str]], float | None] = {}
        sent = time.monotonic()
        after = self._stamps()
        if after is None:
            return out, ages  # an older or stricter server: readings are timed at the query
        # The server told the ages at its evaluation, about halfway through that query:
        # from the call's start (three queries earlier) they are that much less.
        since_start = (sent + time.monotonic()) / 2 - start
        for key, (evaluated, scraped) in after.items():
            if before is not None and key in before and before[key][1] != scraped:
                ages[key] = None
            else:
                ages[key] = max(0.0, evaluated - scraped) - since_start
        return out, ages

    @staticmethod
    def _node(labels: dict[str, str]) -> str:
        return labels.get("Hostname") or labels.get("instance") or "prometheus"

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        if self._opened:
            return
        try:
            series, _ = self._series()
        except QueryError as exc:
            raise MeterUnavailable(f"prometheus: {self.shown}: {exc}") from None
        got = readings(series, self._node)
        if not got:
            raise MeterUnavailable(f"prometheus: {self.shown} has no DCGM_FI_DEV_* or "
                                   f"node_rapl_* series{' matching ' + self.selector if self.selector else ''}")
        for r in got.values():
            self._devices[r.device] = device_info(r)
            self._tracks[r.device] = DeviceTrack(r.device, r.component)
        self._opened = True

    def close(self) -> None:
        self._opened = False

    def info(self) -> MeterInfo:
        interval = ("unknown: readings are timed by when they change" if
                    self.exporter_interval_s is None else f"{self.exporter_interval_s:g} s")
        return MeterInfo(name=self.name, devices=list(self._devices.values()), blocking=True,
                         poll_interval_s=self.poll_interval_s, notes=[
                             f"prometheus: querying {self.shown} every {self.poll_interval_s:g} s"
                             + (f" for {{{self.selector}}}" if self.selector else ""),
                             f"exporter collection interval: {interval} (dcgm-exporter "
                             "collects every 30 s unless started with -c 1000); readings are "
                             "timed when Prometheus scraped them",
                             LOCAL_ONLY])

    # -- reading ---------------------------------------------------------------------
    def sample(self, t_s: float) -> list[Sample]:
        if self._next_t is not None and t_s < self._next_t:
            return []
        self._next_t = t_s + self.poll_interval_s
        return self._read(t_s)

    def sample_final(self, t_s: float) -> list[Sample]:
        return self._read(t_s)

    def _read(self, t_s: float) -> list[Sample]:
        if not self._opened:
            return []
        try:
            series, ages = self._series()
        except QueryError as exc:
            if self._down is None:
                self._errors.append(f"prometheus: {self.shown}: {exc}; not read until it answers")
            self._down = str(exc)
            return []
        if self._down is not None:
            self._notes.append(f"prometheus: {self.shown} answers again")
            self._down = None
        out: list[Sample] = []
        energy_labels = {}
        for name, labels, _ in series:
            if name in _ENERGY:
                energy_labels[self._device_of(name, labels)] = frozenset(labels.items())
        for r in readings(series, self._node).values():
            if r.device not in self._devices:
                self._devices[r.device] = device_info(r)
                self._tracks[r.device] = DeviceTrack(r.device, r.component)
            age = ages.get(energy_labels.get(r.device, frozenset()), 0.0)
            if age is None:
                continue  # scraped again mid-read: the next look reads it whole
            s = self._tracks[r.device].update(r, self.name, t_s - age,
                                              self.exporter_interval_s)
            if s is not None:
                out.append(s)
        return out

    def _device_of(self, name: str, labels: dict[str, str]) -> str:
        got = readings([(name, labels, 0.0)], self._node)
        return next(iter(got)) if got else ""

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
