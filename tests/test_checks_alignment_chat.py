"""Chapter 14's checkers pass right answers and fail typical wrong ones with a hint."""

from __future__ import annotations

import re

import pytest

from gptlib.checks import CheckFailed
from gptlib.checks.alignment_chat import check_splice_calls, check_tamer_noise
from gptlib.rlhf.tamer import GridWorld, train_tamer


def _fails(checker, *args, words=()):
    with pytest.raises(CheckFailed) as info:
        checker(*args)
    message = str(info.value)
    assert "Hint:" in message or "expected" in message, message
    for w in words:
        assert w in message, message


def good_splice(text, tools):
    def call(m):
        name, args = m.group(1), m.group(2)
        if name not in tools:
            return m.group(0)
        try:
            result = str(tools[name](args))
        except ValueError:
            result = "?"
        return f"<{name}>{args}</{name}>{result}"

    return re.sub(r"<(\w+)>(.*?)</\1>", call, text)


def test_splice_calls():
    assert "every complete call" in check_splice_calls(good_splice)

    def first_only(text, tools):
        return re.sub(
            r"<(\w+)>(.*?)</\1>",
            lambda m: m.group(0) + str(tools[m.group(1)](m.group(2))),
            text,
            count=1,
        )

    _fails(check_splice_calls, first_only)

    def no_errors(text, tools):
        return re.sub(
            r"<(\w+)>(.*?)</\1>",
            lambda m: (
                m.group(0) + str(tools[m.group(1)](m.group(2)))
                if m.group(1) in tools
                else m.group(0)
            ),
            text,
        )

    _fails(check_splice_calls, no_errors, words=("ValueError",))

    def any_tool(text, tools):
        return good_splice(text, {**tools, "search": lambda a: "Tavik"})

    _fails(check_splice_calls, any_tool, words=("not in `tools`",))

    def loose_tags(text, tools):
        def call(m):
            try:
                return m.group(0) + str(tools[m.group(1)](m.group(2)))
            except (KeyError, ValueError):
                return m.group(0) + ("?" if m.group(1) in tools else "")

        return re.sub(r"<(\w+)>([^<]*)</\w+>", call, text)

    _fails(check_splice_calls, loose_tags, words=("complete calls",))


def solved(noise, episodes):
    grid = GridWorld(6)
    curves = [train_tamer(grid, episodes, seed=s, noise=noise)[1] for s in range(10)]
    return sum(c[-1] == grid.optimal_steps for c in curves) / 10


def test_tamer_noise():
    assert "as you predicted" in check_tamer_noise(solved, "lower")
    _fails(check_tamer_noise, solved, "higher", words=("measured",))
    _fails(check_tamer_noise, solved, "maybe")
    _fails(check_tamer_noise, lambda n, e: solved(n, e) * 10, "lower", words=("share",))
    _fails(check_tamer_noise, lambda n, e: solved(n, 5), "lower")


def test_stubs_and_missing_names_get_hints():
    def stub(*args):
        raise NotImplementedError()

    with pytest.raises(CheckFailed, match="not written yet"):
        check_splice_calls(stub)
    with pytest.raises(CheckFailed, match="not defined yet"):
        check_tamer_noise("my_tamer_solved_not_written", "lower")
