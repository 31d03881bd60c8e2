"""One test per bug the TOML fuzzing found (or the brief named), with its input."""

from __future__ import annotations

import contextlib
import os
import random
import resource
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import workloads
from tests.fuzz._cli import check, wattflow
from tests.fuzz.test_toml_workflows import check_workflow
from workloads.toml_workflow import TomlWorkload

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "workloads" / "examples"
STAGE = '[[stage]]\nname = "map"\nprompt = "Summarize {passage:10}"\noutput_tokens = 5\n'


def _error(tmp_path: Path, text: str, params: dict[str, Any] | None = None,
           name: str = "flow.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(workloads.WorkloadError) as info:
        workloads.create(str(path), params or {})
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    return msg.removeprefix(f"{path}: ")


def _load(tmp_path: Path, text: str) -> TomlWorkload:
    path = tmp_path / "flow.toml"
    path.write_text(text)
    w = workloads.create(str(path))
    assert isinstance(w, TomlWorkload)
    return w


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.mark.timeout(120)
def test_copies_of_a_hundred_million_is_one_line_not_a_swapping_machine(tmp_path: Path) -> None:
    # The brief's bug: memory grew ~180 MB/s until the machine swapped. In a child with
    # 2 GiB of address space, so that a regression fails instead of swapping.
    flow = tmp_path / "flow.toml"
    flow.write_text(STAGE + "copies = 100000000\n")
    out = subprocess.run(
        [sys.executable, "-m", "app", "run", "--workload", str(flow), "--headless", "--fast",
         "--workflows", "2", "--session", str(tmp_path / "s.jsonl")],
        cwd=ROOT, capture_output=True, text=True, timeout=100, preexec_fn=_limit_memory)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr == (f"wattflow: error: {flow}: stage 'map': copies = 100000000 is out"
                          " of range (1-1024)\n")
    assert not (tmp_path / "s.jsonl").exists()


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("copies", "100000000", "stage 'map': copies = 100000000 is out of range (1-1024)"),
    ("copies", "0", "stage 'map': copies = 0 is out of range (1-1024)"),
    ("copies", "-3", "stage 'map': copies = -3 is out of range (1-1024)"),
    ("copies", "nan", "stage 'map': copies = nan is not a whole number (1-1024)"),
    ("copies", "2.0", "stage 'map': copies = 2 is not a whole number (1-1024)"),
    ("fanout", "4097", "stage 'map': fanout = 4097 is out of range (1-4096)"),
    ("fanout", "inf", "stage 'map': fanout = inf is not a whole number (1-4096)"),
    ("output_tokens", "1000001", "stage 'map': output_tokens = 1000001 is out of range"
                                 " (1-1000000)"),
    ("output_tokens", "[1, 1e9]", "stage 'map': output_tokens[1] = 1000000000 is not a whole"
                                  " number (1-1000000)"),
    ("output_tokens", "{ mean = 5 }", "stage 'map': output_tokens = {'mean': 5} is not a whole"
                                      " number (1-1000000)"),
    ("delay_s", "nan", "stage 'map': delay_s = nan is not a finite number (0-86400)"),
    ("delay_s", "-inf", "stage 'map': delay_s = -inf is not a finite number (0-86400)"),
    ("delay_s", "1e300", "stage 'map': delay_s = 1e+300 is out of range (0-86400)"),
    ("delay_s", "{ mean = -1 }", "stage 'map': delay_s.mean = -1 is out of range (0-86400)"),
    ("delay_s", "[0, nan]", "stage 'map': delay_s[1] = nan is not a finite number (0-86400)"),
    ("probability", "nan", "stage 'map': probability = nan is not a finite number (0-1)"),
    ("probability", "1.5", "stage 'map': probability = 1.5 is out of range (0-1)"),
    ("probability", "-0.5", "stage 'map': probability = -0.5 is out of range (0-1)"),
])
def test_every_numeric_stage_field_refuses_nan_inf_negative_and_huge(
        tmp_path: Path, field: str, value: str, needle: str) -> None:
    text = STAGE.replace("output_tokens = 5\n", "") if field == "output_tokens" else STAGE
    assert _error(tmp_path, text + f"{field} = {value}\n") == needle


@pytest.mark.parametrize(("text", "needle"), [
    ("[arrival]\nrate = nan\n", "arrival: rate = nan is not a finite number"
                                " (more than 0, up to 10000)"),
    ("[arrival]\nrate = 1e9\n", "arrival: rate = 1000000000 is out of range"
                                " (more than 0, up to 10000)"),
    ("[arrival]\nconcurrency = -1\n", "arrival: concurrency = -1 is out of range (1-10000)"),
    ("[shared.sys]\ntokens = 1000000000000000000\n",  # was drawn at load: memory
     "shared.sys: tokens = 1000000000000000000 is out of range (1-1000000)"),
    ("[params]\nx = nan\n", "params.x: must be a finite number, got nan"),
    ("[params]\nx = -inf\n", "params.x: must be a finite number, got -inf"),
])
def test_every_numeric_file_field_refuses_nan_inf_negative_and_huge(
        tmp_path: Path, text: str, needle: str) -> None:
    assert _error(tmp_path, text + STAGE) == needle


def test_a_huge_passage_is_refused_before_it_is_drawn(tmp_path: Path) -> None:
    # {passage:10**18} was cut from the corpus when each workflow was made: memory.
    msg = _error(tmp_path, STAGE.replace("{passage:10}", "{passage:1000000000000000000}"))
    assert msg == ("stage 'map': prompt {passage:1000000000000000000} = 1000000000000000000"
                   " is out of range (1-1000000)")
    msg = _error(tmp_path, STAGE.replace("{passage:10}", "{passage:" + "9" * 5000 + "}"))
    assert msg.startswith("stage 'map': prompt {passage:9999") and len(msg) < 200


@pytest.mark.parametrize(("params", "needle"), [
    # `-p chunks=abc`: a line naming the parameter and the type (int()'s message before).
    ({"chunks": "abc"}, "parameter chunks: expected a whole number (like its default 8),"
                        " got 'abc'"),
    ({"chunks": 2.5}, "parameter chunks: expected a whole number (like its default 8), got 2.5"),
    ({"chunks": float("nan")}, "parameter chunks: expected a whole number (like its default 8),"
                               " got nan"),
    ({"chunks": True}, "parameter chunks: expected a whole number (like its default 8),"
                       " got true"),
    # A value of the right type but out of range: named where it is used, with the range.
    ({"chunks": 100_000_000}, "stage 'map': copies = 100000000 (parameter chunks) is out of"
                              " range (1-1024)"),
    ({"chunks": 0}, "stage 'map': copies = 0 (parameter chunks) is out of range (1-1024)"),
    ({"chunk_tokens": -1}, "stage 'map': prompt {passage:$chunk_tokens} = -1 (parameter"
                           " chunk_tokens) is out of range (1-1000000)"),
    ({"output_tokens": 10**30}, "stage 'map': output_tokens = 10000000000000000000000000000"
                                "00 (parameter output_tokens) is out of range (1-1000000)"),
])
def test_parameters_are_checked_with_one_line_naming_them(
        params: dict[str, Any], needle: str) -> None:
    path = str(EXAMPLES / "sequential-mapreduce.toml")
    with pytest.raises(workloads.WorkloadError) as info:
        workloads.create(path, params)
    assert str(info.value) == f"{path}: {needle}"


@pytest.mark.parametrize(("params", "needle"), [
    ({"rate": float("nan")}, "parameter rate: expected a finite number (like its default 1),"
                             " got nan"),
    ({"rate": float("inf")}, "parameter rate: expected a finite number (like its default 1),"
                             " got inf"),
    ({"rate": "fast"}, "parameter rate: expected a number (like its default 1), got 'fast'"),
    ({"rate": 0}, "arrival: rate = 0 (parameter rate) is out of range (more than 0,"
                  " up to 10000)"),
    ({"followup": 2}, "stage 'followup1': probability = 2 (parameter followup) is out of range"
                      " (0-1)"),
])
def test_float_parameters(params: dict[str, Any], needle: str) -> None:
    path = str(EXAMPLES / "copilot.toml")
    with pytest.raises(workloads.WorkloadError) as info:
        workloads.create(path, params)
    assert str(info.value) == f"{path}: {needle}"


def test_cli_p_abc_is_one_line(tmp_path: Path) -> None:
    path = str(EXAMPLES / "sequential-mapreduce.toml")
    o = wattflow("run", "--headless", "--fast", "--workload", path, "-p", "chunks=abc",
                 "--workflows", "1", "--session", str(tmp_path / "s.jsonl"))
    check(o, path=path)
    assert o.code == 2
    assert o.err == (f"wattflow: error: {path}: parameter chunks: expected a whole number"
                     " (like its default 8), got 'abc'\n")
    assert "invalid literal" not in o.err


def test_a_stage_after_one_defined_later_and_dropped_is_dropped_too(tmp_path: Path) -> None:
    # Stage b names a, defined after it; when a's probability dropped it, b was kept
    # and its workflow failed to start ("stage 'b' depends on unknown stage 'a'").
    w = _load(tmp_path, '[[stage]]\nname = "b"\nafter = ["a"]\nprompt = "{parents}"\n'
                        'output_tokens = 2\n\n[[stage]]\nname = "a"\nprobability = 0.0\n'
                        'prompt = "x"\noutput_tokens = 2\n')
    spec = w.workflow(0, random.Random(0))
    assert spec.stages == []  # both dropped
    check_workflow(spec)
    w = _load(tmp_path, '[[stage]]\nname = "b"\nafter = ["a"]\nprompt = "{parents}"\n'
                        'output_tokens = 2\n\n[[stage]]\nname = "a"\nprompt = "x"\n'
                        'output_tokens = 2\n')
    spec = w.workflow(0, random.Random(0))
    assert [s.node for s in spec.stages] == ["a", "b"]  # listed in dependency order
    check_workflow(spec)


def test_a_stage_named_like_another_stages_copy_is_refused(tmp_path: Path) -> None:
    # Node ids collided (stage a's copy a_0 and stage a_0): every workflow failed to start.
    msg = _error(tmp_path, '[[stage]]\nname = "a"\ncopies = 2\nprompt = "x"\noutput_tokens = 1\n'
                           '[[stage]]\nname = "a_0"\nprompt = "y"\noutput_tokens = 1\n')
    assert msg == ("stage 'a_0'.name: its node 'a_0' is also a node of stage 'a' (copies are"
                   " named NAME_0, NAME_1, ...)")


def test_a_thousand_stages_chained_backwards_load_and_validate(tmp_path: Path) -> None:
    # The cycle check recursed once a stage: RecursionError (a traceback) from ~1000.
    n = 1000
    text = "".join(f'[[stage]]\nname = "s{i}"\n' + (f'after = ["s{i + 1}"]\n' if i < n - 1
                                                     else "") + 'prompt = "x"\noutput_tokens = 1\n'
                   for i in range(n))
    w = _load(tmp_path, text)
    check_workflow(w.workflow(0, random.Random(0)))
    msg = _error(tmp_path, text.replace('name = "s999"', 'name = "s999"\nafter = ["s0"]'))
    assert msg == ("stage 's0'.after: dependency cycle of 1000 stages: s0 -> s1 -> s2 -> ..."
                   " -> s998 -> s999 -> s0")


def test_more_nodes_calls_or_prompt_tokens_than_the_bounds(tmp_path: Path) -> None:
    two = ('[[stage]]\nname = "a"\ncopies = 1000\nprompt = "x"\noutput_tokens = 1\n'
           '[[stage]]\nname = "b"\ncopies = 25\nprompt = "x"\noutput_tokens = 1\n')
    assert _error(tmp_path, two) == ("stage 'b': a workflow has 1025 nodes by this stage (each"
                                     " copy of each stage is one), more than 1024")
    wide = '[[stage]]\nname = "a"\ncopies = 1000\nfanout = 4096\nprompt = "x"\noutput_tokens = 1\n'
    assert _error(tmp_path, wide) == ("stage 'a': 1000 copies x fanout 4096 make 4096000 calls"
                                      " in a workflow, more than 65536")
    # {history} along a chain with a fan-out doubles the prompt at each copy: it was
    # built (2^1000 tokens) when the run got there.
    bomb = ('[[stage]]\nname = "a"\nprompt = "{passage:10}"\noutput_tokens = 1\n'
            '[[stage]]\nname = "b"\nafter = ["a"]\ncopies = 1000\nchain = true\nfanout = 2\n'
            'prompt = "{history}"\noutput_tokens = 1\n')
    assert _error(tmp_path, bomb).startswith("stage 'b'.prompt: a call's prompt can reach about")
    many = ('[[stage]]\nname = "a"\ncopies = 1000\nfanout = 60\nprompt = "{passage:1000}"\n'
            'output_tokens = 1\n')
    assert _error(tmp_path, many) == ("stage 'a': a workflow's prompts come to about 60000000"
                                      " tokens by this stage, more than 16000000 (fewer copies,"
                                      " a smaller fanout or shorter passages)")


def test_messages_stay_on_one_line_whatever_the_names(tmp_path: Path) -> None:
    # A stage named "\n" put the newline into the message.
    assert _error(tmp_path, '[[stage]]\nname = "\\n"\nprompt = "x"\noutput_tokens = 1\n') == (
        "stage[0].name: must be a word of letters, digits, '_', '.', '-', got '\\n'")
    assert _error(tmp_path, STAGE + '"a\\nb" = 1\n').startswith(
        "stage 'map'.a\\nb: unknown field")
    assert _error(tmp_path, STAGE.replace("{passage:10}", "{pass\\nage}")).startswith(
        "stage 'map'.prompt {pass\\nage}: unknown placeholder")


def test_deeply_nested_arrays_are_not_a_traceback(tmp_path: Path) -> None:
    # tomllib recurses: RecursionError escaped as a traceback.
    assert _error(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + "\n" + STAGE) == (
        "not valid TOML: nested too deep")


def test_a_file_too_large_a_directory_and_a_device(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.write(STAGE.encode() + b"# " + b"x" * (17 * 1024 * 1024) + b"\n")
    with pytest.raises(workloads.WorkloadError, match=r"big\.toml: larger than 16 MiB"):
        workloads.create(str(big))
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(workloads.WorkloadError, match=r"dir\.toml: a directory"):
        workloads.create(str(tmp_path / "dir.toml"))


@pytest.mark.timeout(30)
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "flow.toml"
    os.mkfifo(fifo)
    try:
        with pytest.raises(workloads.WorkloadError, match="not a regular file"):
            workloads.create(str(fifo))
    finally:
        def unblock() -> None:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

        threading.Thread(target=unblock, daemon=True).start()


def test_the_examples_still_load_and_give_the_same_workflows() -> None:
    for example in sorted(EXAMPLES.glob("*.toml")):
        w = workloads.create(str(example))
        check_workflow(w.workflow(0, random.Random(0)))
