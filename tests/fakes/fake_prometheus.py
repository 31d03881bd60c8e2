"""FakePrometheus: a stand-in for a Prometheus server, on loopback. It scrapes its
targets (exporter pages: `wattflow serve`'s /metrics) every `scrape_interval_s` with a
real HTTP client, keeps each series' last sample with the time it was scraped (adding
Prometheus' `instance` and `job` labels), and answers the instant queries of the HTTP
API (`GET /api/v1/query`) that the prometheus meter makes:

- `{__name__=~"A|B|C",label="value",...}`: the matching series' last samples;
- `timestamp(SELECTOR)`: when each was scraped, with `__name__` dropped (and Prometheus'
  error for two series left with the same labels).

A target that cannot be scraped loses its series at once, as Prometheus' staleness
markers make them vanish from instant queries. Only this subset of PromQL is understood;
anything else is answered with Prometheus' 400 `bad_data` error.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families


def _parse_selector(text: str) -> list[tuple[str, str, str]] | None:
    """[(label, op, value)] of `{l="v",l=~"a|b"}`, or None if it is not one."""
    text = text.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    out: list[tuple[str, str, str]] = []
    rest = text[1:-1].strip()
    while rest:
        for op in ("=~", "!=", "="):
            i = rest.find(op)
            if i > 0 and '"' not in rest[:i]:
                break
        else:
            return None
        label = rest[:i].strip()
        after = rest[i + len(op):].lstrip()
        if not after.startswith('"'):
            return None
        end = after.find('"', 1)
        if end < 0:
            return None
        out.append((label, op, after[1:end]))
        rest = after[end + 1:].lstrip().removeprefix(",").lstrip()
    return out


def _matches(labels: dict[str, str], matchers: list[tuple[str, str, str]]) -> bool:
    for label, op, value in matchers:
        have = labels.get(label, "")
        if op == "=" and have != value:
            return False
        if op == "!=" and have == value:
            return False
        if op == "=~":
            alts = value.split("|")
            ok = any(have == a or (a.endswith(".*") and have.startswith(a[:-2])) for a in alts)
            if not ok:
                return False
    return True


class FakePrometheus:
    def __init__(self, targets: list[str], scrape_interval_s: float = 0.2,
                 job: str = "dcgm") -> None:
        self.targets = targets
        self.scrape_interval_s = scrape_interval_s
        self.scraped: dict[str, list[float]] = {}  # instance -> unix times of its scrapes
        self.job = job
        # (name, sorted labels) -> (value, scraped at, unix s)
        self.series: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, float]] = {}
        self.queries: list[str] = []
        self.down = False  # answer 503 (the server restarting)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._scraper: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakePrometheus:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        await self.scrape_once()
        self._scraper = asyncio.create_task(self._scrape_forever())
        app = web.Application()
        app.router.add_get("/api/v1/query", self._query)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def close(self) -> None:
        if self._scraper is not None:
            self._scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scraper
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _scrape_forever(self) -> None:
        while True:
            await asyncio.sleep(self.scrape_interval_s)
            await self.scrape_once()

    async def scrape_once(self) -> None:
        assert self._http is not None
        for url in self.targets:
            instance = url.split("://", 1)[1].split("/", 1)[0]
            stale = [k for k in self.series if dict(k[1]).get("instance") == instance]
            try:
                async with self._http.get(url) as resp:
                    text = await resp.text()
                    ok = resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            now = time.time()
            self.scraped.setdefault(instance, []).append(now)
            for k in stale:
                del self.series[k]  # staleness: a failed scrape ends its series
            if not ok:
                continue
            # Prometheus keeps the names as exposed; the text parser adds `_total` to a
            # counter that lacks it (dcgm-exporter's energy counter).
            exposed = {line.split("{")[0].split()[0] for line in text.splitlines()
                       if line.strip() and not line.startswith("#")}
            for fam in text_string_to_metric_families(text):
                for s in fam.samples:
                    name = s.name if s.name in exposed else s.name.removesuffix("_total")
                    labels = {**s.labels, "instance": instance, "job": self.job}
                    self.series[(name, tuple(sorted(labels.items())))] = (float(s.value), now)

    def _bad(self, why: str) -> web.Response:
        return web.Response(status=400, content_type="application/json", body=orjson.dumps(
            {"status": "error", "errorType": "bad_data", "error": why}))

    async def _query(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503, text="Service Unavailable")
        q = request.query.get("query", "")
        self.queries.append(q)
        stamp = q.startswith("timestamp(") and q.endswith(")")
        matchers = _parse_selector(q[len("timestamp("):-1] if stamp else q)
        if matchers is None:
            return self._bad(f"the fake understands a selector or timestamp(selector), not {q!r}")
        now = time.time()
        result: list[dict[str, Any]] = []
        seen: set[tuple[tuple[str, str], ...]] = set()
        for (name, labels), (value, scraped) in self.series.items():
            full = {"__name__": name, **dict(labels)}
            if not _matches(full, matchers):
                continue
            if stamp:
                if labels in seen:
                    return web.Response(status=422, content_type="application/json",
                                        body=orjson.dumps({
                                            "status": "error", "errorType": "execution",
                                            "error": "vector cannot contain metrics with the "
                                                     "same labelset"}))
                seen.add(labels)
                result.append({"metric": dict(labels), "value": [now, repr(scraped)]})
            else:
                result.append({"metric": full, "value": [now, repr(value)]})
        return web.json_response({"status": "success",
                                  "data": {"resultType": "vector", "result": result}})
