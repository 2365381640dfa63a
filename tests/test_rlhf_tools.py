"""Chapter 14's arithmetic demonstrations, with and without calculator calls."""

from __future__ import annotations

import random

from gptlib.rlhf.tools import (
    arithmetic,
    arithmetic_problems,
    ask,
    calc_tokenizer,
    tool_demonstrations,
)


def test_problems_are_right_and_reproducible():
    problems = arithmetic_problems(200, seed=0)
    assert problems == arithmetic_problems(200, seed=0)
    rng = random.Random(0)
    assert problems[:5] == [arithmetic(rng) for _ in range(5)]
    for expr, value in problems:
        a, op, b = expr.partition("*") if "*" in expr else expr.partition("+")
        assert value == (int(a) * int(b) if op == "*" else int(a) + int(b))


def test_demonstrations_round_trip_through_the_tokenizer():
    problems = arithmetic_problems(50, seed=0)
    tok = calc_tokenizer(problems)
    for use_tool in (False, True):
        for prompt, response in tool_demonstrations(problems, use_tool):
            assert prompt == ask(prompt.split("What is ")[1].split("?")[0])
            assert tok.decode(tok.encode(prompt + response)) == prompt + response
            assert response.endswith("\n") and (response.startswith("<calc>") == use_tool)
