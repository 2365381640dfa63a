"""The composed benchmark: solvable, split by template, tiers as documented, tests that discriminate."""
from __future__ import annotations

import pytest

from gptlib import codebench
from gptlib.codex import evaluate_completions


def test_templates_chain_types_and_the_split_is_disjoint():
    assert all(len(t) == 1 for t in codebench.templates(1))
    split = codebench.template_split()
    train, composed, deeper = (set(split[k]) for k in ("train", "composed", "deeper"))
    assert not train & composed and not train & deeper and not composed & deeper
    assert {len(t) for t in train} == {1, 2} and {len(t) for t in composed} == {2}
    assert {len(t) for t in deeper} == {3}
    # "new compositions of seen primitives": every step of a held-out pair was trained alone
    singles = {t[0] for t in train if len(t) == 1}
    assert all(set(t) <= singles for t in composed)
    assert len(composed) >= 30


@pytest.mark.parametrize("tier", codebench.TIERS)
def test_reference_bodies_pass_and_constant_answers_fail(tier):
    problems = codebench.test_problems(tier, n=12)
    assert len(problems) == 12 and len({p.prompt for p in problems}) == 12
    right = evaluate_completions(problems, [(p.task_id, p.canonical_solution) for p in problems],
                                 progress=False, programs_per_process=12)
    assert all(r.passed for r in right), [r.result.message for r in right if not r.passed]
    for constant in ("0", "[]", "''"):
        wrong = evaluate_completions(problems, [(p.task_id, f"    return {constant}\n") for p in problems],
                                     progress=False, programs_per_process=12)
        assert sum(r.passed for r in wrong) == 0


def test_seen_tier_prompts_never_appear_in_training_and_depth_grows_by_tier():
    seen = codebench.test_problems("seen")
    train = codebench.train_problems(3000)
    train_prompts = {p.prompt for p in train}
    assert not train_prompts & {p.prompt for p in seen}
    split = codebench.template_split()
    assert all(len(p.canonical_solution.splitlines()) == 4 for p in codebench.test_problems("deeper"))
    assert len(split["train"]) > 100


def test_same_seed_same_problems_other_seed_other_problems():
    assert codebench.test_problems("composed", seed=0) == codebench.test_problems("composed", seed=0)
    assert codebench.test_problems("composed", seed=0) != codebench.test_problems("composed", seed=1)
    assert codebench.train_problems(50, seed=0) == codebench.train_problems(50, seed=0)
    assert codebench.train_problems(50, seed=0) != codebench.train_problems(50, seed=1)


def test_bad_tier_is_named():
    with pytest.raises(ValueError, match="tier must be one of"):
        codebench.test_problems("hardest")
