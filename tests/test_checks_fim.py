"""Chapter 9's checkers: a right answer passes; typical wrong answers fail with a hint."""
from __future__ import annotations

import pytest

from gptlib.checks import CheckFailed, check_fim_prompt, check_psm
from gptlib.fim import EOT, MID, PRE, SUF


def right_psm(doc, i, j):
    return PRE + doc[:i] + SUF + doc[j:] + MID + doc[i:j] + EOT


def test_check_psm_passes_a_right_answer():
    assert "correct" in check_psm(right_psm)


@pytest.mark.parametrize("wrong, hint", [
    (lambda d, i, j: PRE + SUF + d[j:] + MID + d[:i] + d[i:j] + EOT, "PSM is"),
    (lambda d, i, j: PRE + d[:i] + SUF + d[j:] + MID + d[i:j], "append EOT"),
    (lambda d, i, j: PRE + d[:i] + MID + d[i:j] + SUF + d[j:] + EOT, "move the middle to the end"),
    (lambda d, i, j: PRE + d[j:] + SUF + d[:i] + MID + d[i:j] + EOT, "<PRE> is followed by the prefix"),
    (lambda d, i, j: right_psm(d, min(i + 1, j), j), "off by one"),
    (lambda d, i, j: right_psm(d, i, j).replace(EOT, "\n" + EOT), "only rearranges"),
    (lambda d, i, j: None, "one string"),
])
def test_check_psm_explains_wrong_answers(wrong, hint):
    with pytest.raises(CheckFailed) as err:
        check_psm(wrong)
    assert hint in str(err.value) and "Hint:" in str(err.value)


def right_prompt(prefix, suffix):
    return PRE + prefix + SUF + suffix + MID


def test_check_fim_prompt_passes_a_right_answer():
    assert "correct" in check_fim_prompt(right_prompt)


@pytest.mark.parametrize("wrong, hint", [
    (lambda p, s: PRE + p + SUF + s, "must end with it"),
    (lambda p, s: PRE + p + SUF + s + MID + EOT, "stop at <MID>"),
    (lambda p, s: EOT + PRE + p + SUF + s + MID, "adds that document boundary"),
    (lambda p, s: PRE + s + SUF + p + MID, "<PRE> prefix <SUF> suffix"),
    (lambda p, s: PRE + SUF + s + MID + p, "asks for PSM"),
])
def test_check_fim_prompt_explains_wrong_answers(wrong, hint):
    with pytest.raises(CheckFailed) as err:
        check_fim_prompt(wrong)
    assert hint in str(err.value) and "Hint:" in str(err.value)


def test_check_fim_prompt_generic_mismatch_shows_both():
    with pytest.raises(CheckFailed, match="expected"):
        check_fim_prompt(lambda p, s: "nonsense")
