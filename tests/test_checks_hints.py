"""The checker mechanism: every checker gives a hint for an unfinished answer, never a traceback."""

from __future__ import annotations

import pytest
import torch

import gptlib.checks as checks
from gptlib.checks import CheckFailed, check_query_focus, check_softmax


def test_every_checker_of_every_part_is_registered():
    names = checks._all_checkers()
    assert len(names) >= 30 and len(set(names)) == len(names), "a checker name is used twice"
    for name in names:
        found = getattr(checks, name)
        assert getattr(found, "is_checker", False), f"{name} is not wrapped by @checker"
    with pytest.raises(AttributeError):
        checks.check_does_not_exist  # noqa: B018


def test_a_missing_name_says_which_cell_to_run():
    with pytest.raises(CheckFailed, match=r"(?s)`q_not_written` is not defined yet.*run that cell"):
        check_query_focus("q_not_written", torch.eye(3), ["a", "b", "c"], target="b")


def test_an_answer_given_by_name_is_looked_up_where_the_checker_is_called():
    q_good = torch.tensor([0.0, 9.0, 0.0])  # noqa: F841  (found by name, below)
    assert "on 'b'" in check_query_focus("q_good", torch.eye(3), ["a", "b", "c"], target="b")
    globals()["_module_level_answer"] = torch.tensor(
        [0.0, 9.0, 0.0]
    )  # a notebook's names are globals
    assert "on 'b'" in check_query_focus(
        "_module_level_answer", torch.eye(3), ["a", "b", "c"], target="b"
    )


def test_a_stub_and_an_undefined_helper_get_hints():
    def stub(x):
        raise NotImplementedError()

    def uses_undefined(x):
        return undefined_helper(x)  # noqa: F821

    with pytest.raises(CheckFailed, match="not written yet"):
        check_softmax(stub)
    with pytest.raises(CheckFailed, match="name that is not defined: name 'undefined_helper'"):
        check_softmax(uses_undefined)


def test_a_wrong_answer_still_gets_its_own_diagnosis():
    with pytest.raises(CheckFailed, match="overflows on large inputs"):
        check_softmax(lambda x: x.exp() / x.exp().sum(-1, keepdim=True))
    assert "correct" in check_softmax(lambda x: torch.softmax(x, -1))


def test_predict_then_measure_checks_the_function_and_the_guess():
    import math

    from gptlib.checks import check_attention_entropy

    def row_entropy(q, k, scale):
        p = torch.softmax(scale * (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1)), dim=-1)
        return -(p * p.log()).sum(-1)

    def no_sqrt(q, k, scale):
        p = torch.softmax(scale * (q @ k.transpose(-2, -1)), dim=-1)
        return -(p * p.log()).sum(-1)

    def guess_down():
        return "down"

    assert "was right" in check_attention_entropy(row_entropy, "down")
    assert "was right" in check_attention_entropy("row_entropy", "guess_down")  # both by name
    with pytest.raises(CheckFailed, match="you predicted 'up', the measurement says 'down'"):
        check_attention_entropy(row_entropy, "up")
    with pytest.raises(CheckFailed, match="row entropies at scale"):
        check_attention_entropy(no_sqrt, "down")
    with pytest.raises(CheckFailed, match="write 'up' or 'down'"):
        check_attention_entropy(row_entropy, "sideways")


def test_domain_compression_checks_the_ratio_and_the_guess():
    from gptlib.checks import check_domain_compression
    from gptlib.tokenizer import ByteBPE

    plays = "To be, or not to be, that is the question. " * 40
    code = "def f(x):\n    return x + 1\n" * 40
    tok = ByteBPE.train(plays, vocab_size=300)

    def bytes_per_token(tokenizer, text):
        return len(text.encode("utf-8")) / len(tokenizer.encode(text))

    def tokens_per_byte(tokenizer, text):
        return len(tokenizer.encode(text)) / len(text.encode("utf-8"))

    assert "was right" in check_domain_compression(bytes_per_token, "plays", tok, plays, code)
    with pytest.raises(CheckFailed, match="you predicted 'code', the measurement says 'plays'"):
        check_domain_compression(bytes_per_token, "code", tok, plays, code)
    with pytest.raises(CheckFailed, match="tokens per byte"):
        check_domain_compression(tokens_per_byte, "plays", tok, plays, code)


def test_preface_checkers_catch_wrong_answers():
    from gptlib.checks import check_temperature_for_entropy, check_zero_temperature

    with pytest.raises(CheckFailed, match="has entropy"):
        check_temperature_for_entropy(lambda scores, target: 1.0)
    with pytest.raises(CheckFailed, match="a number > 0"):
        check_temperature_for_entropy(lambda scores, target: -1.0)
    argmax_only = lambda s: torch.nn.functional.one_hot(s.argmax(), len(s)).float()  # noqa: E731
    with pytest.raises(CheckFailed, match=r"limit for scores \[1.0, 3.0, 3.0, -2.0\]"):
        check_zero_temperature(argmax_only, "one-hot")  # a tie must share
    with pytest.raises(CheckFailed, match="you predicted 'uniform'"):
        check_zero_temperature(argmax_only, "uniform")


def test_feedback_is_a_string_shown_wrapped_to_the_output_width():
    from IPython.lib.pretty import pretty

    q_good = torch.tensor([0.0, 9.0, 0.0])
    words = ["a", "b", "c"]
    message = check_query_focus(q_good, torch.eye(3), words, target="b")
    assert isinstance(message, str) and isinstance(message, checks.Feedback)
    long = checks.Feedback("word " * 60 + "\nsecond line")
    shown = pretty(long)  # what a notebook cell shows as its value
    assert all(len(line) <= 88 for line in shown.splitlines())
    assert shown.split() == long.split() and not shown.startswith("'")
    assert shown.splitlines()[-1] == "second line"  # the message's own line breaks are kept
