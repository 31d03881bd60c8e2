"""Sessions of long runs: compressed closed sessions (`--compress`, `NAME.jsonl.zst`) read
by every command, and `--thin` to record less telemetry, the default keeping it all."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import zstandard

from app.core.events import EndEvent, RequestEvent, Sample, SessionHeader
from app.core.session_reader import SessionError, read_session, summarize
from app.core.session_writer import SessionRecorder, compress_session
from app.core.stats import LiveStats

ROOT = Path(__file__).resolve().parents[2]


def wattflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short composite run on virtual time, recorded plainly."""
    d = tmp_path_factory.mktemp("runs")
    out = wattflow("run", "--headless", "--fast", "--duration", "120", "--session", "plain.jsonl",
                   cwd=d)
    assert out.returncode == 0, out.stderr
    return d / "plain.jsonl"


def test_a_compressed_session_reads_as_the_plain_one(recorded: Path, tmp_path: Path) -> None:
    copy = tmp_path / "s.jsonl"
    shutil.copy(recorded, copy)
    packed = compress_session(copy)
    assert packed == tmp_path / "s.jsonl.zst" and not copy.exists()
    assert packed.stat().st_size * 4 < recorded.stat().st_size
    plain, zst = read_session(recorded), read_session(packed)
    assert zst.header == plain.header and zst.end == plain.end
    assert zst.events == plain.events
    a, b = summarize(recorded), summarize(packed)
    assert (a.requests, a.duration_s, a.complete) == (b.requests, b.duration_s, b.complete)


def test_a_damaged_compressed_session_is_refused_in_one_line(recorded: Path,
                                                             tmp_path: Path) -> None:
    packed = compress_session(shutil.copy(recorded, tmp_path / "s.jsonl"))
    data = packed.read_bytes()
    cut = tmp_path / "cut.jsonl.zst"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SessionError, match=r"cut\.jsonl\.zst: compressed data is damaged"):
        read_session(cut)
    flipped = tmp_path / "flipped.jsonl.zst"
    flipped.write_bytes(data[:200] + bytes([data[200] ^ 0xFF]) + data[201:])
    with pytest.raises(SessionError, match=r"flipped\.jsonl\.zst"):
        read_session(flipped)
    out = wattflow("report", str(cut), cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_compressing_never_overwrites(tmp_path: Path, recorded: Path) -> None:
    copy = Path(shutil.copy(recorded, tmp_path / "s.jsonl"))
    (tmp_path / "s.jsonl.zst").write_bytes(b"mine")
    with pytest.raises(SessionError, match="already exists"):
        compress_session(copy)
    assert copy.exists() and (tmp_path / "s.jsonl.zst").read_bytes() == b"mine"


def test_run_compress_and_every_command_reads_it(tmp_path: Path) -> None:
    out = wattflow("run", "--headless", "--fast", "--duration", "30", "--compress",
                   "--session", "s/a.jsonl", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "session: s/a.jsonl.zst" in out.stdout
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["a.jsonl.zst"]
    assert zstandard.ZstdDecompressor().decompressobj().decompress(
        (tmp_path / "s/a.jsonl.zst").read_bytes()).startswith(b'{"kind":"session"')
    # A --session name ending in .zst asks for it too.
    out = wattflow("run", "--headless", "--fast", "--duration", "30", "--session",
                   "s/b.jsonl.zst", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "s/b.jsonl.zst").exists() and not (tmp_path / "s/b.jsonl").exists()
    listing = wattflow("sessions", "s", cwd=tmp_path)
    assert listing.returncode == 0 and "a.jsonl.zst" in listing.stdout, listing.stderr
    assert "b.jsonl.zst" in listing.stdout and "unreadable" not in listing.stdout
    report = wattflow("report", "s/a.jsonl.zst", "s/b.jsonl.zst", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    replay = wattflow("replay", "--headless", "--speed", "100000", "s/a.jsonl.zst", cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    again = wattflow("run", "--headless", "--fast", "--duration", "5", "--session",
                     "s/a.jsonl", "--compress", cwd=tmp_path)
    assert again.returncode == 2 and "s/a.jsonl.zst already exists" in again.stderr


def test_thin_keeps_every_request_and_the_energy(tmp_path: Path, recorded: Path) -> None:
    out = wattflow("run", "--headless", "--fast", "--duration", "120", "--thin", "5",
                   "--session", "thin.jsonl", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    full, thin = read_session(recorded), read_session(tmp_path / "thin.jsonl")

    def requests(events: list) -> list:
        return [e for e in events if isinstance(e, RequestEvent)]

    assert requests(thin.events) == requests(full.events)
    samples = [e for e in thin.events if isinstance(e, Sample)]
    assert 0 < len(samples) <= 125 / 5 + 2  # one per 5 s per device, and the last
    assert len([e for e in full.events if isinstance(e, Sample)]) > 5 * len(samples)
    # The counters' first and last readings are kept: the whole run's energy is the same.
    energy = []
    for data in (full, thin):
        stats = LiveStats()
        for ev in data.events:
            stats.on_event(ev)
        energy.append(stats.snapshot().energy_j)
    assert energy[0] == pytest.approx(energy[1], rel=1e-9)
    assert (tmp_path / "thin.jsonl").stat().st_size * 1.5 < recorded.stat().st_size


def test_thin_writes_each_devices_last_reading(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    rec = SessionRecorder(path, thin_s=1.0)
    rec.open(SessionHeader(t_s=0.0, name="t"))
    for i in range(35):
        for dev in ("gpu0", "gpu1"):
            rec.write(Sample(t_s=i * 0.1, meter="m", device=dev, energy_mj=100.0 * i))
    rec.close(EndEvent(t_s=4.0))
    got = [(e.device, e.t_s) for e in read_session(path).events]  # type: ignore[attr-defined]
    for dev in ("gpu0", "gpu1"):
        times = [t for d, t in got if d == dev]
        assert times == [0.0, 1.0, 2.0, 3.0, 3.4]
    assert rec.events_thinned == 2 * (35 - 5)


@pytest.mark.parametrize("value", ["-1", "x", "nan", "7200"])
def test_bad_thin_is_a_usage_error(tmp_path: Path, value: str) -> None:
    out = wattflow("run", "--headless", "--fast", "--duration", "5", "--thin", value,
                   cwd=tmp_path)
    assert out.returncode == 2 and "--thin" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_cat_writes_every_record_whole_for_jq(tmp_path: Path, recorded: Path) -> None:
    packed = compress_session(Path(shutil.copy(recorded, tmp_path / "s.jsonl")))
    out = wattflow("cat", str(packed), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [orjson.loads(x) for x in out.stdout.splitlines()]
    assert lines[0]["kind"] == "session" and lines[0]["version"] == 1
    assert lines[-1]["kind"] == "end"
    finished = [d for d in lines if d["kind"] == "request" and d["phase"] == "finished"]
    assert finished and all(d["stage"] and d["latency_s"] > 0 for d in finished)
    # What it writes is a version-1 session of the same events.
    saved = tmp_path / "whole.jsonl"
    saved.write_text(out.stdout)
    assert read_session(saved).events == read_session(recorded).events
    missing = wattflow("cat", "nothere.jsonl", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip() == (
        "wattflow: error: no such session file: nothere.jsonl")


def test_a_compressed_sweep_compares_its_points(tmp_path: Path) -> None:
    out = wattflow("sweep", "--fast", "--workload", "interactive", "--rate", "2", "--duration",
                   "20", "--grid", "batch_limit=8,64", "--compress", "--dir", "pts",
                   cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "pts").iterdir()) == [
        "batch_limit=64.jsonl.zst", "batch_limit=8.jsonl.zst"]
    assert "batch_limit=8.jsonl.zst" in out.stdout and "batch_limit=64.jsonl.zst" in out.stdout
