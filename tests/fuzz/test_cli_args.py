"""Fuzzing `wattflow run`'s arguments: flags, `-p`, `-E` and `--at` values drawn from the
values users mistype (nan, inf, negatives, huge numbers, words, empty strings).

Two tiers: many examples through the parser and the run's validation in-process (the
whole decision "run or refuse" without running), and a few through a real subprocess
run on virtual time. Every outcome is exit 0, 1 or 2, one line and no traceback for a
refusal, within a time bound, and a refusal leaves no session file.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import cli

ROOT = Path(__file__).resolve().parents[2]

NUMBERS = st.sampled_from([
    "0", "1", "-1", "2", "8", "64", "300", "1e9", "-5", "nan", "NaN", "inf", "-inf", "1e308",
    "99999999999", "0.001", "1e-9", "abc", "", " ", "1,2", "0x10", "3.5", "700", "1e-3",
])
# Plausible values, so that the subprocess tier mostly runs rather than refuses.
PLAUSIBLE = st.sampled_from(["1", "2", "4", "8", "64", "300", "450", "0.5", "1.5"])
WORDS = st.sampled_from(["chain", "mapreduce", "spiral", "chat", "completions", "true", "",
                         "none", "x" * 300, "é", "-1"])
PARAM_KEYS = st.sampled_from([
    "chunks", "chunk_tokens", "output_tokens", "reduce_tokens", "concurrency", "rate",
    "variant", "agents", "rounds", "followup_prob", "think_s", "max_followups",
    "interactive_rate", "sequential.chunks", "agentic.agents", "nope", "", "parts",
])
ENGINE_KEYS = st.sampled_from(["max_num_seqs", "gpu", "model", "seed", "nope", "", "url"])
KNOBS = st.sampled_from(["power_cap", "batch_limit", "rate", "max_tokens", "max_num_seqs",
                         "voltage", ""])


@st.composite
def run_args(draw: st.DrawFn, plausible: bool = False) -> list[str]:
    numbers = st.one_of(PLAUSIBLE, PLAUSIBLE, PLAUSIBLE, NUMBERS) if plausible else NUMBERS
    args: list[str] = []
    flags = draw(st.lists(st.sampled_from([
        "--batch-limit", "--power-cap", "--max-tokens", "--rate", "--poll-interval",
        "--request-timeout", "--max-backlog", "--seed", "--duration", "--workflows",
    ]), max_size=4, unique=True))
    for f in flags:
        args += [f, draw(numbers)]
    for _ in range(draw(st.integers(0, 1 if plausible else 3))):
        args += ["-p", f"{draw(PARAM_KEYS)}={draw(st.one_of(numbers, WORDS))}"]
    for _ in range(draw(st.integers(0, 0 if plausible else 2))):
        args += ["-E", f"{draw(ENGINE_KEYS)}={draw(st.one_of(numbers, WORDS))}"]
    knobs = st.sampled_from(["batch_limit", "rate", "max_tokens"]) if plausible else KNOBS
    for _ in range(draw(st.integers(0, 2))):
        args += ["--at", f"{draw(numbers)}:{draw(knobs)}={draw(numbers)}"]
    names = ["sequential", "interactive", "agentic", "composite"]
    args += ["--workload", draw(st.sampled_from(names if plausible else [*names, "nosuch"]))]
    return args


def _validate(argv: list[str], session: Path) -> tuple[int, str]:
    """What `wattflow run` decides before it starts anything: parse, then build the
    config and workload. (0, "") means it would run."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = cli.build_parser().parse_args(cli._join_dash_values(["run", *argv]))
            args.session_default = False
            cli._config(args, session)
        except SystemExit as exc:
            return int(exc.code or 0), err.getvalue()
        except cli.UsageError as exc:
            return 2, str(exc)
    return 0, ""


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(run_args())
def test_every_argument_list_is_run_or_refused_in_one_line(argv: list[str]) -> None:
    session = Path("/nonexistent-dir-for-fuzz/s.jsonl")
    code, message = _validate(argv, session)
    assert code in (0, 2), (argv, code, message)
    if code == 2:
        assert message.strip() and len(message.strip().splitlines()) == 1, (argv, message)
        assert "Traceback" not in message


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(run_args(plausible=True))
def test_real_runs_end_with_0_1_or_2_and_no_traceback(
        tmp_path_factory: pytest.TempPathFactory, argv: list[str]) -> None:
    tmp = tmp_path_factory.mktemp("run")
    # Keep each run to seconds of wall time: the stop condition is ours, and the
    # durations the fuzzer may draw are refused or replaced.
    argv = list(argv)
    for flag in ("--duration", "--workflows"):
        if flag in argv:
            i = argv.index(flag)
            del argv[i:i + 2]
    session = tmp / "s.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "app", "run", "--headless", "--fast", *argv, "--duration", "4",
         "--session", str(session)],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1, 2), (argv, proc.stderr)
    assert "Traceback" not in proc.stderr and "never retrieved" not in proc.stderr, proc.stderr
    if proc.returncode == 2:
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not session.exists()
    else:
        assert session.exists()
        assert session.read_bytes().rstrip().endswith(b"}")
        assert b'"kind":"end"' in session.read_bytes().splitlines()[-1]
