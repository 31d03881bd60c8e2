"""`wattflow serve` as a user runs it: a process on loopback that answers, stops cleanly
on SIGTERM and Ctrl-C (also mid-answer), refuses bad flags in one line, and that
`wattflow run --engine openai --url ...` runs against end to end."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.commands.serve_process import ROOT, ServeProcess
from tests.session_records import session_records

pytestmark = pytest.mark.timeout(90)


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_answers_and_stops_cleanly_on_a_signal_mid_answer(sig: int) -> None:
    with ServeProcess("--gpus", "2", "--node", "n7") as srv:
        assert srv.proc is not None
        status, body = _get(srv.url + "/metrics")
        assert status == 200 and b'Hostname="n7"' in body and b'gpu="1"' in body
        # A long answer in flight when the signal comes.
        req = urllib.request.Request(
            srv.url + "/v1/completions", method="POST",
            data=orjson.dumps({"prompt": "x", "max_tokens": 100_000, "stream": True}))
        stream = urllib.request.urlopen(req, timeout=5)
        assert stream.readline().startswith(b"data: ")
        t0 = time.monotonic()
        srv.proc.send_signal(sig)
        rest = stream.read()  # the answer ends (with an error event), the socket closes
        out, err = srv.proc.communicate(timeout=10)
        assert time.monotonic() - t0 < 5
        assert srv.proc.returncode == 0, err
        assert b'"error"' in rest.rsplit(b"data: ", 1)[-1]  # the last event says why
        assert "stopped after 1 requests" in out
        assert "Traceback" not in err


def test_serve_refuses_bad_flags_in_one_line() -> None:
    for args, code, words in [
        (["--port", "70000"], 2, "--port"),
        (["--gpus", "0"], 2, "--gpus"),
        (["-E", "max_num_seqs=0"], 2, "max_num_seqs"),
        (["--gpu", "b200"], 2, "unknown simulated GPU"),
    ]:
        p = subprocess.run([sys.executable, "-m", "app", "serve", *args], cwd=ROOT,
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == code, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1 and words in p.stderr, p.stderr


def test_serve_on_a_port_in_use_says_so() -> None:
    with ServeProcess() as first:
        port = first.url.rsplit(":", 1)[1]
        p = subprocess.run([sys.executable, "-m", "app", "serve", "--port", port], cwd=ROOT,
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 1
        assert p.stderr.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in p.stderr


def test_wattflow_run_against_wattflow_serve(tmp_path: Path) -> None:
    session = tmp_path / "s.jsonl"
    with ServeProcess() as srv:
        p = subprocess.run(
            [sys.executable, "-m", "app", "run", "--headless", "--engine", "openai",
             "--url", srv.url + "/v1", "--meter", "none", "--workload", "sequential",
             "-p", "chunks=2", "-p", "chunk_tokens=64", "-p", "output_tokens=16",
             "--workflows", "2", "--session", str(session)],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        code, out, _ = srv.terminate()
    assert code == 0 and "stopped after 4 requests" in out
    lines = session_records(session)
    finished = [e for e in lines if e["kind"] == "request" and e["phase"] == "finished"]
    assert len(finished) == 4 and all(e["output_tokens"] == 16 for e in finished)
    assert lines[-1]["kind"] == "end" and lines[-1]["reason"] == "completed"
