"""Chapter 9's checkers: a right answer passes; typical wrong answers fail with a hint.

The new checkers (gptlib.checks.fim) run the reader's code on the shipped fim/fim and fim/l2r
models; the older PSM-transform checkers (gptlib.checks.codex) on strings.
"""

from __future__ import annotations

import math

import pytest
import torch

from gptlib import fim, toycode
from gptlib.checks import CheckFailed, check_fim_prompt, check_psm
from gptlib.checks.fim import check_char_nll, check_nll_prediction, check_rank_names
from gptlib.evaluate import continuation_logprobs
from gptlib.fim import EOT, MID, PRE, SUF


def right_psm(doc, i, j):
    return PRE + doc[:i] + SUF + doc[j:] + MID + doc[i:j] + EOT


def test_check_psm_passes_a_right_answer():
    assert "correct" in check_psm(right_psm)


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda d, i, j: PRE + SUF + d[j:] + MID + d[:i] + d[i:j] + EOT, "PSM is"),
        (lambda d, i, j: PRE + d[:i] + SUF + d[j:] + MID + d[i:j], "append EOT"),
        (
            lambda d, i, j: PRE + d[:i] + MID + d[i:j] + SUF + d[j:] + EOT,
            "move the middle to the end",
        ),
        (lambda d, i, j: right_psm(d, min(i + 1, j), j), "off by one"),
    ],
)
def test_check_psm_explains_wrong_answers(wrong, hint):
    with pytest.raises(CheckFailed) as err:
        check_psm(wrong)
    assert hint in str(err.value) and "Hint:" in str(err.value)


def test_check_fim_prompt_passes_a_right_answer_and_explains_a_wrong_one():
    assert "correct" in check_fim_prompt(lambda p, s: PRE + p + SUF + s + MID)
    with pytest.raises(CheckFailed, match="must end with it"):
        check_fim_prompt(lambda p, s: PRE + p + SUF + s)


# --- exercise 9.1: predict, then measure -------------------------------------------------


def test_check_nll_prediction_judges_against_the_measurement():
    measured = fim.compare_infilling(60, seed=7)
    assert "within 2 nats" in check_nll_prediction(
        {"l2r": measured["l2r"] + 1.5, "fim": measured["fim"] - 1.0}
    )
    with pytest.raises(CheckFailed, match="left-to-right guess"):
        check_nll_prediction({"l2r": measured["l2r"] - 4, "fim": measured["fim"]})
    with pytest.raises(CheckFailed, match="FIM guess"):
        check_nll_prediction({"l2r": measured["l2r"], "fim": measured["fim"] + 5})
    with pytest.raises(CheckFailed, match="keys"):
        check_nll_prediction({"l2r": 9.0})
    with pytest.raises(CheckFailed, match="numbers"):
        check_nll_prediction({"l2r": "nine", "fim": 1.0})


# --- exercise 9.2: per-character NLL -----------------------------------------------------


def right_char_nll(model, tokenizer, hole, how):
    context = EOT + (
        fim.fim_prompt(hole.prefix, hole.suffix, "spm") if how == "fim" else hole.prefix
    )
    ids = tokenizer.encode(context + hole.middle)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids[:-1]]))[0], -1)
    n = len(hole.middle)
    return -logp[-n:].gather(1, torch.tensor(ids[-n:])[:, None])[:, 0]


def test_check_char_nll_passes_a_right_answer():
    assert "correct" in check_char_nll(right_char_nll)


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda m, t, h, how: -right_char_nll(m, t, h, how), "signs"),
        (lambda m, t, h, how: right_char_nll(m, t, h, how)[1:], "one per character"),
        (lambda m, t, h, how: right_char_nll(m, t, h, "l2r"), "differ"),
        (lambda m, t, h, how: "no", "1-D tensor"),
    ],
)
def test_check_char_nll_explains_wrong_answers(wrong, hint):
    with pytest.raises(CheckFailed) as err:
        check_char_nll(wrong)
    assert hint in str(err.value)


def test_check_char_nll_spots_a_missing_eot():
    def no_eot(model, tokenizer, hole, how):
        context = fim.fim_prompt(hole.prefix, hole.suffix, "spm") if how == "fim" else hole.prefix
        ids = tokenizer.encode(context + hole.middle)
        out = -continuation_logprobs(
            model, [ids[: -len(hole.middle)]], [ids[-len(hole.middle) :]], reduce="none"
        )[0]
        return out

    with pytest.raises(CheckFailed, match="EOT"):
        check_char_nll(no_eot)


# --- exercise 9.3: a left-to-right model that ranks every name ---------------------------


def right_rank(model, tokenizer, prefix, suffix, template):
    context = tokenizer.encode(EOT + prefix)
    files = [tokenizer.encode(template.format(name=n) + suffix) for n in toycode.NAMES]
    keep = model.config.block_size + 1 - max(map(len, files))
    scores = continuation_logprobs(model, [context[-keep:]] * len(files), files)
    return toycode.NAMES[int(scores.argmax())]


def test_check_rank_names_passes_ranking_and_fails_guessing():
    assert "names right" in check_rank_names(right_rank)
    with pytest.raises(CheckFailed, match="names right"):
        check_rank_names(lambda m, t, p, s, tpl: toycode.NAMES[0])
    with pytest.raises(CheckFailed, match="not a name"):
        check_rank_names(lambda m, t, p, s, tpl: "total")

    # ranking by the line alone, blind to the suffix, is no better than the pool's prior
    def blind(model, tokenizer, prefix, suffix, template):
        return right_rank(model, tokenizer, prefix, "", template)

    with pytest.raises(CheckFailed):
        check_rank_names(blind, n=2)
    assert math.log(len(toycode.NAMES)) > 5
