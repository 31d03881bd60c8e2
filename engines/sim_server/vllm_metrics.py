"""vLLM's Prometheus metrics, kept by the server for its simulated engines.

Names, types, labels (`model_name`, `engine`: one per engine, as vLLM's data-parallel
engines have) and histogram buckets as vLLM (v1, 0.10-0.11) exposes them. The KV-cache
gauge is given under its current name and the one it had before vLLM renamed it, so
dashboards and scrapers built on either read it; `time_per_output_token_seconds` is the
older name of `inter_token_latency_seconds` and is kept beside it for the same reason.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                   50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
_LABELS = ("model_name", "engine")


class VllmMetrics:
    """One registry per server (never the process-wide default one: tests run several
    servers in one process)."""

    def __init__(self, model: str, engines: int) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.running = Gauge("vllm:num_requests_running",
                             "Number of requests in model execution batches.", _LABELS,
                             registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting",
                             "Number of requests waiting to be processed.", _LABELS, registry=r)
        self.kv = Gauge("vllm:kv_cache_usage_perc",
                        "KV-cache usage. 1 means 100 percent usage.", _LABELS, registry=r)
        self.kv_old = Gauge("vllm:gpu_cache_usage_perc",
                            "GPU KV-cache usage. 1 means 100 percent usage (the name before"
                            " vLLM renamed it kv_cache_usage_perc).", _LABELS, registry=r)
        self.preemptions = Counter("vllm:num_preemptions",
                                   "Cumulative number of preemption from the engine.", _LABELS,
                                   registry=r)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.",
                                     _LABELS, registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens",
                                         "Number of generation tokens processed.", _LABELS,
                                         registry=r)
        self.success = Counter("vllm:request_success", "Count of successfully processed "
                               "requests.", (*_LABELS, "finished_reason"), registry=r)
        self.ttft = Histogram("vllm:time_to_first_token_seconds",
                              "Histogram of time to first token in seconds.", _LABELS,
                              buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("vllm:inter_token_latency_seconds",
                             "Histogram of inter-token latency in seconds.", _LABELS,
                             buckets=ITL_BUCKETS, registry=r)
        self.tpot = Histogram("vllm:time_per_output_token_seconds",
                              "Histogram of time per output token in seconds (the older "
                              "name of inter_token_latency_seconds).", _LABELS,
                              buckets=ITL_BUCKETS, registry=r)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds",
                             "Histogram of e2e request latency in seconds.", _LABELS,
                             buckets=REQUEST_BUCKETS, registry=r)
        self.prompt_hist = Histogram("vllm:request_prompt_tokens",
                                     "Number of prefill tokens processed.", _LABELS,
                                     buckets=_token_buckets(), registry=r)
        self.generation_hist = Histogram("vllm:request_generation_tokens",
                                         "Number of generation tokens processed.", _LABELS,
                                         buckets=_token_buckets(), registry=r)
        self.labels = [(model, str(i)) for i in range(engines)]
        for lab in self.labels:  # every series exists from the start, at zero
            for m in (self.running, self.waiting, self.kv, self.kv_old, self.preemptions,
                      self.prompt_tokens, self.generation_tokens, self.ttft, self.itl,
                      self.tpot, self.e2e, self.prompt_hist, self.generation_hist):
                m.labels(*lab)

    def set_state(self, engine: int, running: int, waiting: int, kv_fraction: float) -> None:
        lab = self.labels[engine]
        self.running.labels(*lab).set(running)
        self.waiting.labels(*lab).set(waiting)
        self.kv.labels(*lab).set(kv_fraction)
        self.kv_old.labels(*lab).set(kv_fraction)

    def first_token(self, engine: int, ttft_s: float, prompt_tokens: int) -> None:
        lab = self.labels[engine]
        self.ttft.labels(*lab).observe(ttft_s)
        self.prompt_tokens.labels(*lab).inc(prompt_tokens)

    def tokens(self, engine: int, n: int, gap_s: float | None) -> None:
        """`n` output tokens that arrived together, `gap_s` after the previous ones."""
        lab = self.labels[engine]
        self.generation_tokens.labels(*lab).inc(n)
        if gap_s is not None and n > 0:
            itl, tpot = self.itl.labels(*lab), self.tpot.labels(*lab)
            each = gap_s / n
            for _ in range(n):
                itl.observe(each)
                tpot.observe(each)

    def finished(self, engine: int, reason: str, e2e_s: float, prompt_tokens: int,
                 output_tokens: int) -> None:
        lab = self.labels[engine]
        self.success.labels(*lab, reason).inc()
        self.e2e.labels(*lab).observe(e2e_s)
        self.prompt_hist.labels(*lab).observe(prompt_tokens)
        self.generation_hist.labels(*lab).observe(output_tokens)


def _token_buckets() -> tuple[float, ...]:
    """vLLM's 1-2-5 series up to a million tokens."""
    out: list[float] = []
    m = 1
    while m <= 1_000_000:
        out.extend(float(m * k) for k in (1, 2, 5) if m * k <= 1_000_000)
        m *= 10
    return tuple(out)
