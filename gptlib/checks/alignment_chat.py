"""Exercise checkers for chapter 14: several tools in one answer, and TAMER's noisy trainer."""

from __future__ import annotations

import re
from typing import Callable

from gptlib.checks import _fail, checker

__all__ = ["check_splice_calls", "check_tamer_noise"]


def _reference_splice(text: str, tools: dict) -> str:
    def call(m: re.Match) -> str:
        name, args = m.group(1), m.group(2)
        if name not in tools:
            return m.group(0)
        try:
            result = str(tools[name](args))
        except ValueError:
            result = "?"
        return f"<{name}>{args}</{name}>{result}"

    return re.sub(r"<(\w+)>(.*?)</\1>", call, text)


def _add(args: str) -> int:
    parts = args.split("+")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"add takes a+b, got {args!r}")
    return int(parts[0]) + int(parts[1])


@checker
def check_splice_calls(fn: Callable[[str, dict], str]) -> str:
    """``splice_calls(text, tools)``: after every complete call ``<name>args</name>`` whose
    ``name`` is a key of ``tools``, insert ``tools[name](args)`` (``"?"`` when it raises
    ``ValueError``); calls to unknown tools and unclosed calls stay as they are."""
    tools = {"calc": _add, "rev": lambda w: w[::-1]}
    cases = [
        "<calc>2+3</calc>",
        "It is <calc>12+30</calc> apples.",
        "<rev>cat</rev> and <calc>1+1</calc>",
        "<calc>1+1</calc><calc>2+2</calc>",
        "<calc>two+3</calc>",
        "<search>capital</search> <rev>ab</rev>",
        "no calls at all",
        "<calc>4+4",
        "<rev>tac</calc>",
    ]
    for text in cases:
        want = _reference_splice(text, tools)
        try:
            got = fn(text, dict(tools))
        except ValueError as err:
            _fail(
                f"splice_calls({text!r}) raised ValueError ({err}).",
                "a tool's error is part of the answer: catch it and insert '?'.",
            )
        except NotImplementedError:
            raise
        except Exception as err:  # noqa: BLE001 - show the reader what went wrong
            _fail(f"splice_calls({text!r}) raised {type(err).__name__}: {err}")
        if got == want:
            continue
        hint = None
        if text.count("</") > 1 and got != want:
            hint = "every call gets its result, not only the first (re.sub or a loop)."
        if "<search>" in text:
            hint = "a call to a tool that is not in `tools` stays as it is, with no result."
        if text in ("<calc>4+4", "<rev>tac</calc>"):
            hint = "only complete calls <name>...</name> (same name in both tags) run."
        if "two" in text:
            hint = "when the tool raises ValueError, insert '?' after the call."
        _fail(f"splice_calls({text!r}) = {got!r}, expected {want!r}.", hint)
    return "splice_calls: every complete call to a known tool gets its result, errors give '?'."


@checker
def check_tamer_noise(fn: Callable[..., float], prediction) -> str:
    """Predict, then measure: does training longer make up for a noisier trainer?

    ``fn(noise, episodes)`` is the share of 10 TAMER seeds (0-9) on the shortest path of
    ``GridWorld(6)`` after ``episodes`` episodes; ``prediction`` (``"higher"``, ``"same"`` or
    ``"lower"``) compares the share at noise 0.3 after 20 episodes with noise 0.1 after 5.
    """
    from gptlib.rlhf.tamer import GridWorld, train_tamer

    if callable(prediction):
        prediction = prediction()
    if prediction not in {"higher", "same", "lower"}:
        _fail(
            f"prediction is {prediction!r}; expected 'higher', 'same' or 'lower'.",
            "predict before you measure: prediction = 'higher' (or 'same', 'lower').",
        )
    grid = GridWorld(6)

    def solved(noise: float, episodes: int) -> float:
        curves = [train_tamer(grid, episodes, seed=s, noise=noise)[1] for s in range(10)]
        return sum(c[-1] == grid.optimal_steps for c in curves) / 10

    for noise, episodes in ((0.1, 5), (0.3, 20), (0.0, 3)):
        want = solved(noise, episodes)
        got = fn(noise, episodes)
        if not isinstance(got, (int, float)) or not 0.0 <= got <= 1.0:
            _fail(
                f"fn({noise}, {episodes}) = {got!r}; expected a share between 0 and 1.",
                "count the seeds whose last curve value equals grid.optimal_steps, divide by 10.",
            )
        if abs(got - want) > 1e-9:
            _fail(
                f"fn({noise}, {episodes}) = {got:g}, expected {want:g} (seeds 0-9).",
                "train_tamer(grid, episodes, seed=s, noise=noise)[1][-1] is the greedy "
                "policy's steps after the last episode.",
            )
    late, early = solved(0.3, 20), solved(0.1, 5)
    truth = "higher" if late > early else ("lower" if late < early else "same")
    if prediction != truth:
        _fail(
            f"you predicted '{prediction}'; measured: {late:.1f} of the seeds at noise 0.3 "
            f"after 20 episodes, {early:.1f} at noise 0.1 after 5.",
            "TAMER acts greedily on its estimate of the trainer: an action judged bad "
            "by a flipped answer is never tried again, so more episodes do not undo it.",
        )
    return (
        f"tamer noise: measured {late:.1f} (noise 0.3, 20 episodes) vs {early:.1f} "
        f"(noise 0.1, 5 episodes): '{truth}', as you predicted."
    )
