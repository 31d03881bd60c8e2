"""SSE decoding and Prometheus gauge parsing of the `openai` engine, without a server."""

from __future__ import annotations

import pytest

from engines.openai.metrics import parse_gauges
from engines.openai.sse import SSEDecoder


def test_sse_events_split_across_reads_are_joined() -> None:
    d = SSEDecoder()
    assert d.feed(b'data: {"a"') == []
    assert d.feed(b': 1}\n') == []  # line complete, event not yet (no blank line)
    assert d.feed(b"\ndata: [DO") == [b'{"a": 1}']
    assert d.feed(b"NE]\n\n") == [b"[DONE]"]


def test_sse_many_events_in_one_read_crlf_comments_and_fields() -> None:
    d = SSEDecoder()
    raw = (b": keep-alive\r\n\r\n"
           b"event: message\r\nid: 7\r\ndata: one\r\n\r\n"
           b"data:two\n\n"
           b"data: a\ndata: b\n\n")
    assert d.feed(raw) == [b"one", b"two", b"a\nb"]


def test_sse_crlf_split_between_reads_is_not_a_blank_line() -> None:
    d = SSEDecoder()
    assert d.feed(b"data: x\r") == []
    assert d.feed(b"\ndata: y\r\n\r\n") == [b"x\ny"]  # one event with two data lines
    assert d.feed(b"data: z\r\r") == []  # the last CR may yet be half of a CRLF
    assert d.feed(b"data: w\n\n") == [b"z", b"w"]  # bare CRs end lines too


def test_sse_flush_delivers_an_event_missing_its_blank_line() -> None:
    d = SSEDecoder()
    assert d.feed(b"data: last") == []
    assert d.flush() == [b"last"]
    assert d.flush() == []


VLLM_PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 7.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
vllm:num_requests_waiting{engine="0",model_name="m"} 5.0
vllm:num_requests_waiting_by_reason{reason="capacity"} 99.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
vllm:gpu_cache_usage_perc{model_name="m"} 0.5
vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="m"} 12.0
"""


def test_old_vllm_names_label_sets_summed_and_cache_as_percent() -> None:
    g = parse_gauges(VLLM_PAGE)
    assert g.running == 9
    assert g.waiting == 5  # the longer *_by_reason name is not mistaken for it
    assert g.kv_cache_pct == pytest.approx(50.0)


def test_new_vllm_cache_name_and_unlabelled_samples() -> None:
    page = "vllm:kv_cache_usage_perc 0.125\nvllm:num_requests_running 3\n"
    g = parse_gauges(page)
    assert g.kv_cache_pct == pytest.approx(12.5)
    assert g.running == 3 and g.waiting is None


def test_sglang_names() -> None:
    page = ('sglang:num_running_reqs{model_name="q"} 4.0\n'
            'sglang:num_queue_reqs{model_name="q"} 11.0\n'
            'sglang:token_usage{model_name="q"} 0.75\n')
    g = parse_gauges(page)
    assert (g.running, g.waiting, g.kv_cache_pct) == (4, 11, pytest.approx(75.0))


def test_page_without_engine_gauges_is_empty() -> None:
    assert parse_gauges("# HELP process_cpu_seconds_total x\nprocess_cpu_seconds_total 3\n").empty()
    assert not parse_gauges("vllm:num_requests_waiting 0\n").empty()
