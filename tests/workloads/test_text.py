"""Prompt text: deterministic for a seed, on target under an engine's tokenizer."""

from __future__ import annotations

import random

import workloads
from tests.workloads.runs import dag_of
from workloads.text import Piece, compose, count_tokens, passage, using_tokenizer


def fake_tokenizer(text: str) -> int:
    """A stand-in for a tokenizer far from the estimate: two characters a token."""
    return (len(text) + 1) // 2


def test_passage_is_deterministic_for_a_seed() -> None:
    assert passage(300, random.Random(1)) == passage(300, random.Random(1))
    assert passage(300, random.Random(1)) != passage(300, random.Random(2))


def test_passage_hits_its_target_under_the_engine_tokenizer() -> None:
    for target in (50, 512, 2048):
        with using_tokenizer(fake_tokenizer):
            fitted = passage(target, random.Random(target))
            assert target - 3 <= count_tokens(fitted) <= target
        estimated = passage(target, random.Random(target))
        # the same place in the corpus, cut to another length by the fitting
        assert fitted[:40] == estimated[:40]
        assert not target - 3 <= fake_tokenizer(estimated) <= target


def test_compose_counts_literals_together_and_trusts_known_pieces() -> None:
    text, tokens = compose(["Refine the summary.\nSo far: ", Piece("x y z", 40), "\nNext: "])
    assert text == "Refine the summary.\nSo far: x y z\nNext: "
    assert tokens == round(6 * 1.33) + 40
    with using_tokenizer(fake_tokenizer):
        assert compose(["abcd", Piece("efgh", 99)])[1] == 4


def test_workload_prompts_are_counted_by_the_installed_tokenizer() -> None:
    w = workloads.create("sequential", {"chunks": 3, "chunk_tokens": 512})
    with using_tokenizer(fake_tokenizer):
        _, dag = dag_of(w)
    for r in dag.requests:
        assert r.prompt_tokens == fake_tokenizer(r.prompt)
    assert count_tokens("one two three") == 4  # estimate, not 7  # the hook was removed again
