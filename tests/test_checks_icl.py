"""The chapter 6 checkers accept correct answers and reject typical wrong ones, helpfully."""
from __future__ import annotations

import pytest
import torch

from gptlib.checks import CheckFailed, check_build_prompt, check_induction_score


# ----------------------------------------------------------------------------- prompts


def good_prompt(examples, query):
    return "".join(f"\n{x}={y}" for x, y in examples) + f"\n{query}="


def test_build_prompt_accepts_a_correct_builder():
    assert "correct" in check_build_prompt(good_prompt)


def test_build_prompt_rejects_a_trailing_newline():
    with pytest.raises(CheckFailed, match="newlines") as err:
        check_build_prompt(lambda ex, q: good_prompt(ex, q) + "\n")
    assert "Hint:" in str(err.value)


def test_build_prompt_rejects_spaces_around_the_sign():
    with pytest.raises(CheckFailed, match="spaces"):
        check_build_prompt(lambda ex, q: "".join(f"\n{x} = {y}" for x, y in ex) + f"\n{q} =")


def test_build_prompt_rejects_a_missing_question():
    with pytest.raises(CheckFailed, match="lines"):
        check_build_prompt(lambda ex, q: "".join(f"\n{x}={y}" for x, y in ex) + "=")


def test_build_prompt_rejects_a_non_string():
    with pytest.raises(CheckFailed, match="str"):
        check_build_prompt(lambda ex, q: list(ex))


# ----------------------------------------------------------------------------- induction


def good_score(att, length):
    q = torch.arange(length, 2 * length)
    return att[..., q, q - length + 1].mean(-1)


def test_induction_score_accepts_a_correct_score():
    assert "correct" in check_induction_score(good_score)


@pytest.mark.parametrize("wrong, message", [
    (lambda att, L: att[..., torch.arange(L, 2 * L), torch.arange(0, L)].mean(-1), "previous occurrence itself"),
    (lambda att, L: att[..., torch.arange(L, 2 * L), torch.arange(L - 1, 2 * L - 1)].mean(-1), "previous token"),
    (lambda att, L: att[..., torch.arange(L, 2 * L), torch.arange(1, L + 1)].sum(-1), "sum"),
    (lambda att, L: att[..., torch.arange(1, L + 1), torch.arange(L, 2 * L)].mean(-1), "swapped"),
])
def test_induction_score_names_typical_mistakes(wrong, message):
    with pytest.raises(CheckFailed, match=message) as err:
        check_induction_score(wrong)
    assert "Hint:" in str(err.value)


def test_induction_score_rejects_a_wrong_shape():
    with pytest.raises(CheckFailed, match="shape"):
        check_induction_score(lambda att, L: good_score(att, L).mean())
