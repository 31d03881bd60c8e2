"""Session format version 2: compact lines read back as the events that were written.

The encoder leaves out what the reader can restore (defaults, a subject's previous
values, derived durations) and packs lines that say little into others; whatever the
sequence of events, valid lifecycle or not, the reader must give back the same events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.clock import run_async
from app.core.events import (
    SESSION_VERSION,
    EndEvent,
    EngineStateEvent,
    Event,
    KnobEvent,
    RequestEvent,
    Sample,
    SessionHeader,
    StageEvent,
    WorkflowEvent,
)
from app.core.runner import RunConfig, Runner
from app.core.session_codec import LineDecoder, LineEncoder, unpack
from app.core.session_reader import SessionError, read_session
from app.core.session_writer import SessionRecorder
from workloads.base import Arrival, Call, StageInputs, StageSpec, WorkflowSpec


def _canonical(events: list[Event]) -> list[str]:
    """Events in an order that ignores where a packed line put them."""
    return sorted(orjson.dumps({"kind": e.kind, **e.to_dict()}).decode() for e in events)


def _record(path: Path, events: list[Event], version: int = 2) -> None:
    rec = SessionRecorder(path)
    rec.open(SessionHeader(t_s=0.0, version=version, name="t"))
    for ev in events:
        rec.write(ev)
    rec.close(EndEvent(t_s=100.0))


# -- any sequence of events --------------------------------------------------------------
# Values are on the session's grid (times in quarters of a second, powers in halves of a
# watt), so that the events read back compare equal; subjects come from small sets so
# that lines of one request, stage or workflow follow one another.
_T = st.one_of(st.integers(0, 400).map(lambda n: n / 4), st.integers(0, 100))
_DUR = st.one_of(st.none(), st.integers(0, 40).map(lambda n: n / 4))
_WID = st.sampled_from(["w0", "w1", "w2"])
_NODE = st.sampled_from(["a", "b", ""])
_LABEL = st.sampled_from(["x", "y", ""])
_IDS = st.lists(st.sampled_from(["w0.1", "w0.2", "w1"]), max_size=2)


def _request(t: float, rid: str, phase: str, wid: str, node: str, label: str,
             parents: list[str], prompt: int, out: int, dur: float | None,
             dur2: float | None, reason: str | None, energy: float | None) -> RequestEvent:
    return RequestEvent(t_s=t, request_id=rid, phase=phase, workflow_id=wid, stage=label,
                        node=node, parents=parents, prompt_tokens=prompt, output_tokens=out,
                        max_tokens=16, latency_s=dur, queue_s=dur2, ttft_s=dur2, tpot_s=dur,
                        energy_j=None if energy is None else {"gpu": energy}, reason=reason)


_REQUEST = st.builds(
    _request, _T, st.sampled_from(["w0.1", "w0.2", "w1.1", "x"]),
    st.sampled_from(["submitted", "first_token", "finished", "failed"]), _WID, _NODE, _LABEL,
    _IDS, st.integers(0, 3), st.integers(0, 3), _DUR, _DUR,
    st.sampled_from([None, "length", "stop"]),
    st.one_of(st.none(), st.integers(0, 400).map(lambda n: n / 4)))  # energy: floats
_STAGE = st.builds(
    lambda t, wid, node, label, phase, deps, calls, dur: StageEvent(
        t_s=t, workflow_id=wid, node=node, stage=label, phase=phase, deps=deps, calls=calls,
        latency_s=dur),
    _T, _WID, _NODE, _LABEL, st.sampled_from(["declared", "started", "finished", "failed"]),
    st.lists(_NODE, max_size=2), st.integers(0, 2), _DUR)
_WORKFLOW = st.builds(
    lambda t, wid, phase, dur, path, n, reason: WorkflowEvent(
        t_s=t, workflow_id=wid, workload="wl", phase=phase, latency_s=dur,
        critical_path=path, requests=n, output_tokens=n, reason=reason),
    _T, _WID, st.sampled_from(["started", "finished", "failed", "shed"]), _DUR,
    st.lists(_NODE, max_size=2), st.integers(0, 2), st.sampled_from([None, "r"]))
_SAMPLE = st.builds(
    lambda t, dev, e, p: Sample(t_s=t, meter="m", device=dev, energy_mj=e, power_w=p),
    _T, st.sampled_from(["gpu0", "gpu1"]), st.one_of(st.none(), _T),
    st.one_of(st.none(), st.integers(0, 1400).map(lambda n: n / 2)))
_STATE = st.builds(
    lambda t, src, n, note: EngineStateEvent(t_s=t, source=src, running=n, note=note),
    _T, st.sampled_from(["engine", "client"]), st.one_of(st.none(), st.integers(0, 3)),
    st.sampled_from([None, "drain: x"]))
_KNOB = st.builds(lambda t, v: KnobEvent(t_s=t, knob="rate", value=v, source="ui"),
                  _T, st.one_of(st.none(), _T))
_EVENTS = st.lists(st.one_of(_REQUEST, _REQUEST, _STAGE, _STAGE, _WORKFLOW, _SAMPLE, _STATE,
                             _KNOB), max_size=40)


@pytest.mark.parametrize("version", [2, SESSION_VERSION])
@settings(max_examples=300, deadline=None)
@given(events=_EVENTS)
def test_any_sequence_of_events_reads_back_as_written(version: int, events: list[Event]
                                                      ) -> None:
    enc, dec = LineEncoder(version), LineDecoder(version)
    lines = [line for ev in events for line in enc.encode(ev)] + enc.finish()
    back: list[Event] = []
    for raw in lines:
        d = orjson.loads(orjson.dumps(raw))
        parts = unpack(d)
        assert isinstance(parts, list)
        if d["kind"] == "request" and len(parts) > 1:
            wid, node = dec.request_identity(d)
            for part in parts:
                if part["kind"] == "stage":
                    part["workflow_id"], part["node"] = wid, node
        for part in parts:
            cls = {"request": RequestEvent, "stage": StageEvent, "workflow": WorkflowEvent,
                   "sample": Sample, "engine_state": EngineStateEvent,
                   "knob": KnobEvent}[part["kind"]]
            full = dict(dec.decode(cls, part))
            del full["kind"]
            back.append(cls(**full))
    assert _canonical(back) == _canonical(events)


def _lines(events: list[Event], version: int = SESSION_VERSION) -> list[dict[str, Any]]:
    enc = LineEncoder(version)
    return [orjson.loads(orjson.dumps(x)) for ev in events for x in enc.encode(ev)
            ] + enc.finish()


def test_a_sample_names_its_device_only_out_of_turn(tmp_path: Path) -> None:
    # Three devices read in turn; gpu1 misses a reading, dram0 joins later, and a
    # reading comes out of turn: the device is named where it is not the next in turn.
    order = ["gpu0", "gpu1", "cpu0", "gpu0", "gpu1", "cpu0", "gpu0", "cpu0", "gpu0", "gpu1",
             "cpu0", "dram0", "gpu0", "gpu1", "cpu0", "dram0", "gpu1", "gpu0"]
    events: list[Event] = [Sample(t_s=i / 10, meter="m", device=d, power_w=float(i))
                           for i, d in enumerate(order)]
    named = [x.get("device") for x in _lines(events)]
    assert named == ["gpu0", "gpu1", "cpu0", None, None, None, None, "cpu0", None, None,
                     None, "dram0", None, None, None, None, "gpu1", "gpu0"]
    path = tmp_path / "s.jsonl"
    _record(path, events)
    assert read_session(path).events == events
    # Version 2 names every one.
    assert all("device" in x for x in _lines(events, version=2))


def test_a_finished_request_takes_its_queue_time_from_the_previous_finished() -> None:
    events: list[Event] = []
    for i, q in enumerate([0.0, 0.0, 0.25, 0.25]):
        rid = f"w{i}.1"
        events += [RequestEvent(t_s=i, request_id=rid, workflow_id=f"w{i}"),
                   RequestEvent(t_s=i + 0.5, request_id=rid, workflow_id=f"w{i}",
                                phase="finished", queue_s=q, reason="stop")]
    finished = [x for x in _lines(events) if x.get("phase") == "finished"]
    assert [x.get("queue_s") for x in finished] == [0.0, None, 0.25, None]
    enc, dec = LineEncoder(), LineDecoder()
    back = []
    for ev in events:
        for line in enc.encode(ev):
            full = dict(dec.decode(RequestEvent, orjson.loads(orjson.dumps(line))))
            del full["kind"]
            back.append(RequestEvent(**full))
    assert back == events


def test_version_2_lines_read_as_version_2_wrote_them(tmp_path: Path) -> None:
    # The same lines mean other things in versions 2 and 3: a sample without a device
    # (version 2: a first line, which takes the previous first line's; version 3: the
    # next device in turn), a finished request without queue_s (version 2: its own
    # previous value; version 3: the previous finished request's).
    body = (b'{"kind":"sample","t_s":1.0,"device":"gpu0","power_w":5.0}\n'
            b'{"kind":"sample","t_s":1.0,"device":"gpu1","power_w":5.0}\n'
            b'{"kind":"sample","t_s":1.1,"power_w":6.0}\n'
            b'{"kind":"request","t_s":1.0,"request_id":"w.1","workflow_id":"w"}\n'
            b'{"kind":"request","t_s":2.0,"request_id":"w.1","phase":"finished",'
            b'"queue_s":0.5}\n'
            b'{"kind":"request","t_s":1.5,"request_id":"v.1","workflow_id":"v",'
            b'"queue_s":0.25}\n'
            b'{"kind":"request","t_s":3.0,"request_id":"v.1","phase":"finished"}\n')
    got = {}
    for version in (2, 3):
        path = tmp_path / f"v{version}.jsonl"
        path.write_bytes(b'{"kind":"session","version":%d}\n' % version + body)
        events = read_session(path).events
        got[version] = ([e.device for e in events if isinstance(e, Sample)],
                        [e.queue_s for e in events
                         if isinstance(e, RequestEvent) and e.phase == "finished"])
    assert got[2] == (["gpu0", "gpu1", "gpu1"], [0.5, 0.25])
    assert got[3] == (["gpu0", "gpu1", "gpu0"], [0.5, 0.5])


# -- real runs ---------------------------------------------------------------------------
class OneCall:
    """Workflows of one call each, 16 at a time: the shape of a load generator's run."""

    name = "one-call"

    def params(self) -> dict[str, Any]:
        return {}

    def arrival(self) -> Arrival:
        return Arrival(concurrency=16)

    def workflow(self, index: int, rng: random.Random) -> WorkflowSpec:
        def build(_: StageInputs) -> list[Call]:
            return [Call(prompt="w " * 64, prompt_tokens=64, max_tokens=16)]

        return WorkflowSpec(workflow_id=f"b{index}", workload=self.name,
                            stages=[StageSpec(node="call", stage="call", build=build)])


def _run(tmp_path: Path, workload: Any, **cfg: Any) -> tuple[list[Event], Path]:
    path = tmp_path / "s.jsonl"
    runner = Runner(RunConfig(engine="sim", fast=True, session_path=path, **cfg),
                    workload=workload)
    seen: list[Event] = []
    runner.bus.subscribe(seen.append)
    run_async(runner.run(), virtual=True)
    return [e for e in seen if e.kind not in ("session", "end")], path


@pytest.mark.parametrize("meters", [["none"], ["sim"]])
def test_a_run_reads_back_as_the_bus_carried_it(tmp_path: Path, meters: list[str]) -> None:
    """Without meters a finished request is published at once; with them it waits for
    its energy share, after its stage's and workflow's lines: both orders pack."""
    seen, path = _run(tmp_path, OneCall(), meters=meters, workflows=300)
    data = read_session(path)
    assert data.header.version == SESSION_VERSION and data.end is not None and not data.warnings
    _same_at_resolution(data.events, seen)


def _same_at_resolution(read: list[Event], written: list[Event]) -> None:
    """The events, in canonical order, equal to the resolution of a session: times and
    durations to 1.5 us (a duration is the difference of two recorded times), the unit
    fields to half their last decimal (app/core/session_codec.py)."""
    from app.core.session_codec import decimals

    def key(e: Event) -> tuple[str, ...]:
        return tuple(str(getattr(e, k, "")) for k in (
            "kind", "request_id", "workflow_id", "node", "phase", "device", "source"))

    a, b = sorted(read, key=lambda e: (key(e), e.t_s)), sorted(written,
                                                             key=lambda e: (key(e), e.t_s))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert type(x) is type(y), (x, y)
        for f in dataclasses.fields(x):
            u, v = getattr(x, f.name), getattr(y, f.name)
            places = 6 if f.name.endswith("_s") else decimals(f.name)
            tol = 1.6e-6 if f.name.endswith("_s") else 0.51 * 10.0**-(places or 0)
            if isinstance(v, float | dict) and places is not None:
                assert u == pytest.approx(v, abs=tol), (f.name, x, y)
            else:
                assert u == v, (f.name, x, y)


def test_a_one_call_request_takes_under_600_bytes(tmp_path: Path) -> None:
    # The target for a load generator's run: at most 600 bytes per request.
    seen, path = _run(tmp_path, OneCall(), meters=["none"], workflows=500)
    requests = sum(1 for e in seen if isinstance(e, RequestEvent) and e.phase == "submitted")
    assert requests == 500
    header, *_, end = path.read_bytes().splitlines(keepends=True)
    body = path.stat().st_size - len(header) - len(end)
    assert body / requests < 600
    # The same run in version 1 took about 1.8 kB per request.


def test_a_new_optional_field_is_left_out_at_its_default_and_read_back() -> None:
    # Another issue adds optional fields (a request's `endpoint`): nothing here names them.
    @dataclasses.dataclass(slots=True)
    class WithEndpoint(RequestEvent):
        kind: ClassVar[str] = "request"
        endpoint: str | None = None

    enc, dec = LineEncoder(), LineDecoder()
    events = [WithEndpoint(t_s=1.0, request_id="w.1", workflow_id="w"),
              WithEndpoint(t_s=2.0, request_id="w.2", workflow_id="w", endpoint="http://a"),
              WithEndpoint(t_s=3.0, request_id="w.2", phase="finished", workflow_id="w",
                           endpoint="http://a")]
    lines = [line for ev in events for line in enc.encode(ev)] + enc.finish()
    assert all("endpoint" not in line for line in lines if line["request_id"] == "w.1")
    assert sum("endpoint" in line for line in lines) == 1  # inherited on w.2's finish
    back = []
    for line in lines:
        full = dict(dec.decode(WithEndpoint, dict(line)))
        del full["kind"]
        back.append(WithEndpoint(**full))
    assert _canonical(back) == _canonical(events)  # type: ignore[arg-type]


def test_an_event_that_cannot_be_encoded_restarts_the_encoding(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    events: list[Event] = [
        RequestEvent(t_s=1.0, request_id="w.1", workflow_id="w", prompt_tokens=5),
        RequestEvent(t_s=1.5, request_id="w.2", workflow_id="w", prompt_tokens=5),
        RequestEvent(t_s=2.0, request_id="w.1", workflow_id="w", phase="first_token",
                     prompt_tokens=2**70),  # orjson refuses an int past 64 bits
        # After the error line both sides start afresh: w.1's last line is whole.
        RequestEvent(t_s=3.0, request_id="w.1", workflow_id="w", phase="finished",
                     prompt_tokens=5, output_tokens=3),
        RequestEvent(t_s=4.0, request_id="w.2", workflow_id="w", phase="failed",
                     prompt_tokens=5, reason="x"),
    ]
    _record(path, events)
    data = read_session(path)
    kinds = [(e.kind, getattr(e, "phase", None)) for e in data.events]
    assert kinds == [("request", "submitted"), ("request", "submitted"), ("error", None),
                     ("request", "finished"), ("request", "failed")]
    assert "could not record a request event" in data.events[2].message  # type: ignore[attr-defined]
    assert data.events[3:] == events[3:]


@pytest.mark.parametrize(("line", "why"), [
    (b'{"kind":"workflow","t_s":1,"workflow_id":"w","stages":3}', "stages is not a list"),
    (b'{"kind":"workflow","t_s":1,"workflow_id":"w","stages":[{"t_s":2}]}', "holds a kind"),
    (b'{"kind":"request","t_s":1,"request_id":"w.1","stage_started_t_s":"x"}', "not a time"),
    (b'{"kind":"request","t_s":1,"request_id":"w.1","first_token":[1]}', "first_token"),
    (b'{"kind":"request","t_s":1,"request_id":"w.1","stage_started_t_s":1,"node":2}',
     "node is not a string"),
])
def test_a_malformed_packed_line_is_refused_with_its_number(tmp_path: Path, line: bytes,
                                                            why: str) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"kind":"session","version":2}\n' + line + b"\n")
    with pytest.raises(SessionError, match=f"line 2: .*{why}"):
        read_session(path)


def test_version_1_files_are_read_as_they_were_written(tmp_path: Path) -> None:
    # A version-1 line that leaves a duration out means null, not a derived value.
    path = tmp_path / "s.jsonl"
    path.write_bytes(
        b'{"kind":"session","version":1}\n'
        b'{"kind":"request","t_s":1.0,"request_id":"w.1","workflow_id":"w"}\n'
        b'{"kind":"request","t_s":3.0,"request_id":"w.1","phase":"finished"}\n')
    events = read_session(path).events
    assert events[1] == RequestEvent(t_s=3.0, request_id="w.1", phase="finished")


def test_recording_costs_no_task_of_its_own() -> None:
    # The encoder is plain code on the publishing loop: no task, no await.
    assert not asyncio.iscoroutinefunction(LineEncoder.encode)


# -- hand-written version-2 files: read, or refused in one line ----------------------------
_ANY = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.sampled_from([0.5, -1.0, 1e9]),
                 st.sampled_from(["", "w0", "w0.1", "a", "finished", "started", "first_token"]),
                 st.lists(st.sampled_from(["a", "b"]), max_size=2),
                 st.just({"gpu": 1.5}), st.just([{"node": "a"}]), st.just([{"t_s": 1}]))
_KEYS = st.sampled_from([
    "request_id", "workflow_id", "node", "stage", "phase", "parents", "prompt_tokens",
    "output_tokens", "latency_s", "ttft_s", "tpot_s", "reason", "energy_j", "deps", "calls",
    "workload", "device", "energy_mj", "power_w", "source", "running", "stages",
    "stage_started_t_s", "stage_finished_t_s", "first_token", "codec_reset", "extra"])
_LINE = st.builds(
    lambda kind, t, fields: {"kind": kind, "t_s": t, **fields},
    st.sampled_from(["request", "stage", "workflow", "sample", "engine_state", "error"]),
    st.one_of(_T, st.just(0)), st.dictionaries(_KEYS, _ANY, max_size=6))


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINE, max_size=12))
def test_any_version_2_file_reads_or_is_refused_in_one_line(lines: list[dict[str, Any]]
                                                            ) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.jsonl"
        path.write_bytes(b'{"kind":"session","version":2}\n'
                         + b"".join(orjson.dumps(x) + b"\n" for x in lines))
        try:
            data = read_session(path)
        except SessionError as e:
            assert "\n" not in str(e) and str(e).startswith(str(path))
            return
        assert all(isinstance(ev, Event) for ev in data.events)
