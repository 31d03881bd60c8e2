"""Bad input to the remote meters (`--meter dcgm|prometheus`, `-M KEY=VALUE`) is one line
and exit 2, never a traceback, and leaves no session behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.commands.serve_process import ROOT

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("args", "words"), [
    (["--meter", "dcgm"], "dcgm meter: no exporter to scrape (give -M dcgm_url=URL)"),
    (["--meter", "prometheus"], "prometheus: give the server with -M prometheus_url="),
    (["--meter", "dcgm", "-M", "dcgm_url=http://127.0.0.1:9", "-M", "scrape_timeout_s=-1"],
     "dcgm meter: option scrape_timeout_s = -1 is out of range (> 0)"),
    (["--meter", "dcgm", "-M", "dcgm_url=ftp://x"], "a target must be http(s)://"),
    (["--meter", "dcgm", "-M", "dcgm_url=http://127.0.0.1:9/metrics"],
     "meter dcgm: dcgm: nothing to read: http://127.0.0.1:9/metrics: unreachable"),
    (["--meter", "prometheus", "-M", "prometheus_url=http://127.0.0.1:9"],
     "meter prometheus: prometheus: http://127.0.0.1:9: unreachable"),
    (["--meter", "dcgm", "-M", "dcgm"], "'dcgm': expected KEY=VALUE"),
])
def test_remote_meter_input_errors_are_one_line(tmp_path: Path, args: list[str],
                                                 words: str) -> None:
    session = tmp_path / "s.jsonl"
    p = subprocess.run([sys.executable, "-m", "app", "run", "--headless", "--fast",
                        "--duration", "1", "--session", str(session), *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and words in p.stderr, p.stderr
    assert not session.exists()


def test_a_key_given_twice_is_a_list_of_targets() -> None:
    from app.cli import _meter_options

    assert _meter_options([("dcgm_url", "http://a:1"), ("dcgm_url", "http://b:1"),
                           ("dcgm_url", "http://c:1"), ("exporter_interval_s", 1)]) == {
        "dcgm_url": ["http://a:1", "http://b:1", "http://c:1"], "exporter_interval_s": 1}
