"""The engine-side gauges of a Prometheus `/metrics` page: running and waiting
requests and KV-cache use, under the names vLLM (old and new) and SGLang give them.

vLLM's page holds long histograms, so the page is not parsed whole: only the lines of
the few gauges wanted are found and read.
"""

from __future__ import annotations

from dataclasses import dataclass

# Gauge name -> (field, scale). Fractions become percent. Several label sets of one
# gauge (one per model or engine) are summed for counts and averaged for the cache.
GAUGES: dict[str, tuple[str, float]] = {
    "vllm:num_requests_running": ("running", 1.0),
    "vllm:num_requests_waiting": ("waiting", 1.0),
    "vllm:gpu_cache_usage_perc": ("kv_cache_pct", 100.0),  # vLLM before the rename
    "vllm:kv_cache_usage_perc": ("kv_cache_pct", 100.0),
    "sglang:num_running_reqs": ("running", 1.0),
    "sglang:num_queue_reqs": ("waiting", 1.0),
    "sglang:token_usage": ("kv_cache_pct", 100.0),
}


@dataclass(slots=True)
class EngineGauges:
    running: int | None = None
    waiting: int | None = None
    kv_cache_pct: float | None = None

    def empty(self) -> bool:
        return self.running is None and self.waiting is None and self.kv_cache_pct is None


def _values(page: str, name: str) -> list[float]:
    """Values of every sample line of `name` (any labels) on the page."""
    out: list[float] = []
    start = 0
    n = len(name)
    while True:
        i = page.find(name, start)
        if i < 0:
            return out
        start = i + n
        if i > 0 and page[i - 1] != "\n":
            continue  # inside a comment (# HELP/# TYPE) or another name
        nxt = page[i + n : i + n + 1]
        if nxt not in ("{", " "):
            continue  # a longer name that starts with this one
        end = page.find("\n", i)
        line = page[i:] if end < 0 else page[i:end]
        if nxt == "{":
            close = line.rfind("}")
            if close < 0:
                continue
            rest = line[close + 1 :]
        else:
            rest = line[n:]
        parts = rest.split()
        if not parts:
            continue
        try:
            out.append(float(parts[0]))
        except ValueError:
            continue


def parse_gauges(page: str) -> EngineGauges:
    running: list[float] = []
    waiting: list[float] = []
    cache: list[float] = []
    into = {"running": running, "waiting": waiting, "kv_cache_pct": cache}
    for name, (fieldname, scale) in GAUGES.items():
        if name in page:
            into[fieldname].extend(v * scale for v in _values(page, name))
    return EngineGauges(
        running=int(sum(running)) if running else None,
        waiting=int(sum(waiting)) if waiting else None,
        kv_cache_pct=sum(cache) / len(cache) if cache else None,
    )
