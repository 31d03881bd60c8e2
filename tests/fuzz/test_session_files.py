"""Hostile session files through `report`, `report --json`, `replay --headless --speed
max` and `sessions`: whatever the bytes, the outcome is an exit code of 0, 1 or 2, no
traceback, an error of one line naming the file, and it comes back quickly.

The files are built from real event lines (every kind, as the recorder writes them)
and then damaged: values of the wrong type, nested objects, huge and negative
numbers, NaN/Infinity tokens, non-monotonic times, a missing or misplaced header,
unknown kinds, duplicate end records, cut lines, random bytes, invalid UTF-8.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz._cli import check, wattflow

FUZZ = settings(max_examples=100, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

HEADER: dict[str, Any] = {
    "kind": "session", "t_s": 0.0, "version": 1, "name": "fz", "started_unix_s": 1.7e9,
    "clock": "virtual", "config": {"workload": "w", "seed": 0}, "host": {"cpus": 2},
    "engine": {"name": "sim", "model": "m"}, "workload": {"name": "w", "params": {}},
    "meters": [{"name": "sim", "devices": []}], "knobs": {"batch_limit": 64, "power_cap": None},
}

SUMMARY: dict[str, Any] = {
    "t_s": 3.0, "duration_s": 3.0, "wall_s": 0.1, "requests_finished": 1,
    "requests_failed": 0, "workflows_finished": 1, "output_tokens": 20, "prompt_tokens": 100,
    "tokens_per_s": 6.7, "latency_p50_s": 1.0, "latency_p99_s": 1.0, "ttft_p50_s": 0.1,
    "energy_j": {"gpu": 30.0}, "idle_energy_j": {"gpu": 1.0}, "avg_power_w": {"gpu": 10.0},
    "j_per_output_token": 1.5, "gpu_j_per_output_token": 1.5,
}

TEMPLATES: list[dict[str, Any]] = [
    {"kind": "sample", "t_s": 0.5, "meter": "sim", "device": "gpu0", "component": "gpu",
     "energy_mj": 1000.0, "power_w": 300.0, "power_avg_w": 290.0, "util_pct": 50.0,
     "mem_used_mib": 100.0, "sm_clock_mhz": 1980.0, "temp_c": 40.0, "power_limit_w": 700.0},
    {"kind": "request", "t_s": 1.0, "request_id": "w0.a.0", "phase": "submitted",
     "workflow_id": "w0", "stage": "a", "node": "a", "parents": [], "prompt_tokens": 100,
     "output_tokens": 0, "max_tokens": 20, "latency_s": None, "queue_s": None,
     "ttft_s": None, "tpot_s": None, "energy_j": None, "reason": None},
    {"kind": "request", "t_s": 2.0, "request_id": "w0.a.0", "phase": "finished",
     "workflow_id": "w0", "stage": "a", "node": "a", "parents": ["x"], "prompt_tokens": 100,
     "output_tokens": 20, "max_tokens": 20, "latency_s": 1.0, "queue_s": 0.01,
     "ttft_s": 0.1, "tpot_s": 0.05, "energy_j": {"gpu": 29.0}, "reason": "length"},
    {"kind": "request", "t_s": 2.0, "request_id": "w0.b.0", "phase": "failed",
     "workflow_id": "w0", "stage": "b", "node": "b", "parents": [], "prompt_tokens": 10,
     "output_tokens": 0, "max_tokens": 20, "latency_s": 0.5, "queue_s": None,
     "ttft_s": None, "tpot_s": None, "energy_j": {"gpu": 1.0}, "reason": "boom"},
    {"kind": "stage", "t_s": 1.0, "workflow_id": "w0", "node": "a", "stage": "a",
     "phase": "declared", "deps": [], "calls": 1, "latency_s": None},
    {"kind": "stage", "t_s": 2.0, "workflow_id": "w0", "node": "a", "stage": "a",
     "phase": "finished", "deps": [], "calls": 1, "latency_s": 1.0},
    {"kind": "workflow", "t_s": 1.0, "workflow_id": "w0", "workload": "w", "phase": "started",
     "latency_s": None, "critical_path": [], "requests": 0, "output_tokens": 0, "reason": None},
    {"kind": "workflow", "t_s": 2.5, "workflow_id": "w0", "workload": "w", "phase": "finished",
     "latency_s": 1.5, "critical_path": ["a"], "requests": 1, "output_tokens": 20,
     "reason": None},
    {"kind": "workflow", "t_s": 2.5, "workflow_id": "w1", "workload": "w", "phase": "failed",
     "latency_s": 1.5, "critical_path": [], "requests": 1, "output_tokens": 0,
     "reason": "boom"},
    {"kind": "knob", "t_s": 1.5, "knob": "power_cap", "value": 450.0, "previous": None,
     "source": "cli"},
    {"kind": "engine_state", "t_s": 1.5, "source": "client", "running": 1, "waiting": 0,
     "kv_cache_pct": 3.0, "preempted_total": 0, "prefix_hit_pct": 0.0,
     "output_tokens_total": 10, "prompt_tokens_total": 100, "note": None},
    {"kind": "mark", "t_s": 1.7, "label": "here"},
    {"kind": "error", "t_s": 1.8, "source": "engine", "message": "oops\nsecond line",
     "fatal": False},
    {"kind": "end", "t_s": 3.0, "reason": "completed", "summary": SUMMARY},
]

# Values that do not belong: wrong types, nesting, extremes of magnitude and sign.
json_scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(min_value=-(10**30), max_value=10**30),  # read back as floats
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -1e308, 5e-324, -0.0, 2.0**63, -1.0, 0.0]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)
# Values of the right type but hostile: empty, blank, huge, negative, extreme.
odd_strings = st.one_of(st.sampled_from(["", "\n", " ", "\r\n", "\x00", "\u2028", "[red]x[/red]",
                                         "%s", "{}", "a" * 300]), st.text(max_size=8))
odd_numbers = st.one_of(
    st.sampled_from([0, -1, 1e308, -1e308, 5e-324, -0.0, 2**63 - 1, -(2**63), 0.5, 1e20]),
    st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**63 - 1))
odd_ints = st.one_of(st.sampled_from([0, -1, 2**63 - 1, -(2**63)]),
                     st.integers(-(2**63), 2**63 - 1))


def same_type_value(value: Any) -> st.SearchStrategy[Any]:
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return odd_ints
    if isinstance(value, float):
        return odd_numbers
    if isinstance(value, str):
        return odd_strings
    if isinstance(value, list):
        return st.lists(odd_strings, max_size=3)
    if isinstance(value, dict):
        return st.dictionaries(odd_strings, odd_numbers, max_size=3)
    return st.one_of(st.none(), odd_numbers)  # a null that may hold a number


FIELDS = sorted({k for t in [HEADER, *TEMPLATES] for k in t} | {"extra"})


def _dumps(d: dict[str, Any]) -> bytes:
    # The standard library's encoder: it writes integers of any size (orjson refuses
    # those over 64 bits) and escapes lone surrogates, which orjson then rejects.
    return json.dumps(d, separators=(",", ":")).encode() + b"\n"


def _good_line(d: dict[str, Any], t_s: float) -> bytes:
    return _dumps({**d, "t_s": t_s} if d["kind"] != "end" else d)


@st.composite
def damaged_line(draw: st.DrawFn) -> bytes:
    """A real event with fields changed, removed or garbled, or not an event at all."""
    d = dict(draw(st.sampled_from(TEMPLATES)))
    how = draw(st.sampled_from(["values"] * 6 + ["fields"] * 4 + [
        "drop", "kind", "token", "cut", "bytes", "blank", "header", "time"]))
    if how == "values":
        for key in draw(st.lists(st.sampled_from(sorted(d)), min_size=1, max_size=4)):
            if key != "kind":
                d[key] = draw(same_type_value(d[key]))
    elif how == "fields":
        for key in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3)):
            d[key] = draw(json_values)
    elif how == "drop":
        for key in draw(st.lists(st.sampled_from(sorted(d)), min_size=1, max_size=3)):
            d.pop(key, None)
    elif how == "kind":
        d["kind"] = draw(st.one_of(st.sampled_from(["hologram", "", "session", "end", "Sample"]),
                                   json_values))
    elif how == "time":
        d["t_s"] = draw(st.one_of(st.floats(-1e6, 1e6), st.sampled_from([1e308, -1e308, -5.0])))
    elif how == "token":
        # Not JSON, but what a careless writer emits for a float that is not finite.
        key = draw(st.sampled_from(sorted(k for k, v in d.items() if isinstance(v, float))))
        tok = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"nan", b"1e999"]))
        d[key] = "@@"
        return _dumps(d).replace(b'"@@"', tok)
    elif how == "cut":
        raw = _dumps(d)
        return raw[: draw(st.integers(0, len(raw) - 1))] + draw(st.sampled_from([b"", b"\n"]))
    elif how == "bytes":
        return draw(st.binary(max_size=40)) + b"\n"
    elif how == "blank":
        return draw(st.sampled_from([b"\n", b"   \n", b"\r\n", b"\t\n"]))
    elif how == "header":
        d = dict(HEADER)
    return _dumps(d)


@st.composite
def body_lines(draw: st.DrawFn) -> list[bytes]:
    """Real events (times in order, or not), then a few of them damaged."""
    kinds = draw(st.lists(st.sampled_from(TEMPLATES[:-1]), max_size=25))
    if draw(st.booleans()):
        times = sorted(draw(st.lists(st.floats(0, 100), min_size=len(kinds),
                                     max_size=len(kinds))))
    else:
        times = [draw(st.floats(-1e3, 1e3)) for _ in kinds]
    lines = [_good_line(d, t) for d, t in zip(kinds, times, strict=True)]
    if draw(st.booleans()):
        lines.append(_dumps(TEMPLATES[-1]))  # the end record
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2, 3]))):
        lines.insert(draw(st.integers(0, len(lines))), draw(damaged_line()))
    return lines


@st.composite
def header_line(draw: st.DrawFn) -> bytes:
    d = dict(HEADER)
    how = draw(st.sampled_from(["good"] * 12 + ["fields", "fields", "drop", "version", "bytes",
                                                "utf8"]))
    if how == "fields":
        for key in draw(st.lists(st.sampled_from(sorted(HEADER)), min_size=1, max_size=2)):
            d[key] = draw(json_values)
    elif how == "drop":
        for key in draw(st.lists(st.sampled_from(sorted(HEADER)), min_size=1, max_size=3)):
            d.pop(key, None)
    elif how == "version":
        d["version"] = draw(json_values)
    elif how == "bytes":
        return draw(st.binary(max_size=60)) + b"\n"
    elif how == "utf8":
        return _dumps(d).replace(b'"fz"', b'"\xff\xfe"')
    return _dumps(d)


@st.composite
def session_file(draw: st.DrawFn) -> bytes:
    body = draw(body_lines())
    layout = draw(st.sampled_from(["header first"] * 12 + ["no header", "header later", "empty",
                                                           "bytes", "end twice"]))
    if layout == "empty":
        return b""
    if layout == "bytes":
        return draw(st.binary(max_size=200))
    head = draw(header_line())
    if layout == "header first":
        lines = [head, *body]
    elif layout == "no header":
        lines = body
    elif layout == "header later":
        lines = [*body, head]
        lines.insert(0, _dumps(TEMPLATES[0]))
    else:
        lines = [head, *body, _dumps(TEMPLATES[-1]), _dumps(TEMPLATES[-1])]
    tail = draw(st.sampled_from(["whole", "whole", "no newline", "cut"]))
    if tail == "no newline" and lines:
        lines[-1] = lines[-1].rstrip(b"\n")
    elif tail == "cut" and lines and lines[-1]:  # a crash while writing the last line
        lines[-1] = lines[-1][: draw(st.integers(0, len(lines[-1]) - 1))]
    return b"".join(lines)


# Errors about the file as a whole (its first line): no line number to give.
WHOLE_FILE_ERRORS = ("not a wattflow session", "empty file", "session version",
                     "bad session header", "compressed data is damaged")


def _check_all(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fz.jsonl"
        path.write_bytes(data)
        p = str(path)
        o = wattflow("report", p)
        check(o, path=p)
        if o.code == 2 and not any(why in o.err for why in WHOLE_FILE_ERRORS):
            # Anything wrong past the header is pinned to its line.
            assert re.search(rf"{re.escape(p)} line \d+: ", o.err), o.describe()
        o = wattflow("report", p, "--json")
        check(o, path=p)
        if o.code == 0:
            report = orjson.loads(o.out)  # stdout holds only the JSON
            assert len(report["sessions"]) == 1
        check(wattflow("replay", p, "--headless", "--speed", "max"), path=p)
        o = wattflow("sessions", d)
        check(o)
        assert o.code == 0 and "fz.jsonl" in o.out, o.describe()
        assert "\n" not in o.out.strip(), o.describe()  # one line for the one file


@FUZZ
@given(data=session_file())
def test_hostile_session_files(data: bytes) -> None:
    _check_all(data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    _check_all(data)
