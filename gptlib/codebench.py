"""A code benchmark made of composed primitives: it tells recall from generalisation.

HumanEval is far beyond a model that trains in minutes on a laptop, and a benchmark whose
test problems are its training problems with other constants measures recall. This one is
generated from a small grammar. A **primitive** is one step on a value of one type:

- list of ints → list: add c to every item, keep the items greater than c, sort, ...
- list → int: the sum, the number of items, how many items equal c
- int → int: add c, multiply by c, remainder after dividing by c, ...
- str → str / str → int: upper case, reverse, keep the first c characters, count a letter, ...

A **template** is a chain of 1-3 primitives whose types fit. A problem is a template with
its constants drawn, written in HumanEval's format: the signature and a docstring with one
clause per step (the prompt), one line per step (the reference body) and hidden tests whose
expected values come from running the reference body here::

    def solve(xs):
        \"\"\"Add 3 to every item, then keep the items greater than 5, then take the sum.\"\"\"
        xs = [x + 3 for x in xs]
        xs = [x for x in xs if x > 5]
        n = sum(xs)
        return n

The split is by template, so the test set has three tiers of distance from what was trained
(:data:`TIERS`): ``seen`` (a training template with constants it was never trained with),
``composed`` (two primitives the model saw, in a pair it never saw) and ``deeper`` (three
steps; training stops at two).
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from itertools import product

from gptlib.passk import HumanEvalProblem

__all__ = [
    "Primitive",
    "PRIMITIVES",
    "TIERS",
    "templates",
    "template_split",
    "make_problem",
    "test_problems",
    "train_problems",
]


@dataclass(frozen=True)
class Primitive:
    """One step: ``clause`` for the docstring, ``line`` for the body, ``{c}`` the constant."""

    name: str
    source: str  # type it reads: "list" | "int" | "str"
    target: str  # type it returns
    clause: str
    line: str
    constants: tuple = ()  # values the constant may take; () for none


_DIGITS = tuple(range(10))
_LETTERS = tuple("abcde")
PRIMITIVES: tuple[Primitive, ...] = (
    Primitive(
        "add", "list", "list", "add {c} to every item", "xs = [x + {c} for x in xs]", _DIGITS[1:]
    ),
    Primitive(
        "mul",
        "list",
        "list",
        "multiply every item by {c}",
        "xs = [x * {c} for x in xs]",
        _DIGITS[2:],
    ),
    Primitive(
        "above",
        "list",
        "list",
        "keep the items greater than {c}",
        "xs = [x for x in xs if x > {c}]",
        _DIGITS,
    ),
    Primitive(
        "below",
        "list",
        "list",
        "keep the items less than {c}",
        "xs = [x for x in xs if x < {c}]",
        _DIGITS,
    ),
    Primitive("take", "list", "list", "keep the first {c} items", "xs = xs[:{c}]", _DIGITS[1:]),
    Primitive("drop", "list", "list", "drop the first {c} items", "xs = xs[{c}:]", _DIGITS[1:]),
    Primitive("sort", "list", "list", "sort the items", "xs = sorted(xs)"),
    Primitive("rev", "list", "list", "reverse the order of the items", "xs = xs[::-1]"),
    Primitive("even", "list", "list", "keep the even items", "xs = [x for x in xs if x % 2 == 0]"),
    Primitive("sum", "list", "int", "take the sum", "n = sum(xs)"),
    Primitive("len", "list", "int", "count the items", "n = len(xs)"),
    Primitive("count", "list", "int", "count the items equal to {c}", "n = xs.count({c})", _DIGITS),
    Primitive("plus", "int", "int", "add {c}", "n = n + {c}", _DIGITS[1:]),
    Primitive("minus", "int", "int", "subtract {c}", "n = n - {c}", _DIGITS[1:]),
    Primitive("times", "int", "int", "multiply by {c}", "n = n * {c}", _DIGITS[2:]),
    Primitive(
        "mod", "int", "int", "take the remainder after dividing by {c}", "n = n % {c}", _DIGITS[2:]
    ),
    Primitive("upper", "str", "str", "convert it to upper case", "s = s.upper()"),
    Primitive("srev", "str", "str", "reverse the string", "s = s[::-1]"),
    Primitive("first", "str", "str", "keep the first {c} characters", "s = s[:{c}]", _DIGITS[1:]),
    Primitive("sdrop", "str", "str", "drop the first {c} characters", "s = s[{c}:]", _DIGITS[1:]),
    Primitive("repeat", "str", "str", "repeat the string {c} times", "s = s * {c}", (2, 3, 4)),
    Primitive("remove", "str", "str", "remove every '{c}'", "s = s.replace('{c}', '')", _LETTERS),
    Primitive("slen", "str", "int", "take the length", "n = len(s)"),
    Primitive("scount", "str", "int", "count the '{c}' characters", "n = s.count('{c}')", _LETTERS),
)
_BY_NAME = {p.name: p for p in PRIMITIVES}
_VAR = {"list": "xs", "int": "n", "str": "s"}

#: The test tiers, nearest to training first.
TIERS = ("seen", "composed", "deeper")


def templates(depth: int) -> list[tuple[str, ...]]:
    """Every chain of ``depth`` primitives whose types fit (no primitive twice in a row)."""
    out = []
    for chain in product(PRIMITIVES, repeat=depth):
        if all(a.target == b.source and a.name != b.name for a, b in zip(chain, chain[1:])):
            out.append(tuple(p.name for p in chain))
    return out


def _hash(text: str) -> float:
    return zlib.crc32(text.encode()) / 2**32


def template_split(held_out: float = 0.25) -> dict[str, list[tuple[str, ...]]]:
    """Templates by role: ``train`` (every single step, most pairs), ``composed`` (the
    remaining pairs: both steps trained, never together) and ``deeper`` (all triples).
    The pair split is a fixed hash of the template, so it never depends on a seed."""
    pairs = templates(2)
    composed = [t for t in pairs if _hash("|".join(t)) < held_out]
    return {
        "train": templates(1) + [t for t in pairs if t not in composed],
        "composed": composed,
        "deeper": templates(3),
    }


def _inputs(kind: str, rng: random.Random, count: int = 5) -> list:
    if kind == "list":
        return [[rng.randint(0, 9) for _ in range(rng.randint(4, 8))] for _ in range(count)]
    if kind == "str":
        return [
            "".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 8))) for _ in range(count)
        ]
    return [rng.randint(0, 30) for _ in range(count)]


def make_problem(
    template: tuple[str, ...],
    constants: tuple,
    task_id: str,
    rng: random.Random,
    distinct: bool = False,
) -> HumanEvalProblem:
    """The problem for ``template`` with ``constants`` (one per step; None where none).

    ``distinct=True``: draw inputs until the expected answers are not all the same (else
    ValueError), so that no constant answer passes every test."""
    steps = [_BY_NAME[name] for name in template]
    arg = _VAR[steps[0].source]
    clauses = [p.clause.format(c=c) for p, c in zip(steps, constants)]
    doc = ", then ".join(clauses)
    doc = doc[0].upper() + doc[1:] + "."
    prompt = f'def solve({arg}):\n    """{doc}"""\n'
    lines = [f"    {p.line.format(c=c)}\n" for p, c in zip(steps, constants)]
    body = "".join(lines) + f"    return {_VAR[steps[-1].target]}\n"
    namespace: dict = {}
    exec(prompt + body, namespace)  # our own reference code: computes the expected values
    for _ in range(20):  # tests whose answers all agree would let a constant answer pass
        inputs = _inputs(steps[0].source, rng)
        if not distinct or len({repr(namespace["solve"](v)) for v in inputs}) > 1:
            break
    else:
        raise ValueError(f"no discriminating tests for {template} with {constants}")
    asserts = "".join(f"    assert candidate({v!r}) == {namespace['solve'](v)!r}\n" for v in inputs)
    return HumanEvalProblem(
        task_id=task_id,
        prompt=prompt,
        entry_point="solve",
        canonical_solution=body,
        test=f"def check(candidate):\n{asserts}",
    )


def _constants(template: tuple[str, ...], rng: random.Random) -> tuple:
    return tuple(
        rng.choice(_BY_NAME[n].constants) if _BY_NAME[n].constants else None for n in template
    )


def test_problems(tier: str, n: int = 30, seed: int = 0) -> list[HumanEvalProblem]:
    """``n`` problems of one tier (:data:`TIERS`), seeded; ids ``Compose/<tier>/<i>``.

    ``seen`` problems use training templates with constants that :func:`train_problems`
    never pairs with them; ``composed`` and ``deeper`` use templates it never shows.
    """
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}.")
    split = template_split()
    pool = split["train"] if tier == "seen" else split[tier]
    rng = random.Random(f"codebench-test-{tier}-{seed}")
    if tier == "seen":  # steps with a constant, so that "new constants" means something
        pool = [t for t in pool if any(_BY_NAME[s].constants for s in t)]
    rng.shuffle(pool)
    problems: list[HumanEvalProblem] = []
    for t in pool:  # some templates never discriminate (count the 3s among even items): skip
        for _ in range(10):  # some constants make every answer equal (drop 8 of 5 items)
            try:
                problems.append(
                    make_problem(
                        t, _constants(t, rng), f"Compose/{tier}/{len(problems)}", rng, distinct=True
                    )
                )
                break
            except ValueError:
                continue
        if len(problems) == n:
            break
    return problems


def _held_keys(seed: int) -> set:
    keys = set()
    for p in test_problems("seen", seed=seed):
        keys.add(p.prompt)
    return keys


def train_problems(count: int, seed: int = 0, test_seed: int = 0) -> list[HumanEvalProblem]:
    """``count`` training problems: training templates (depth 1 and 2) with random constants,
    never one whose prompt is a ``seen``-tier test prompt."""
    templ = template_split()["train"]
    held = _held_keys(test_seed)
    rng = random.Random(f"codebench-train-{seed}")
    out: list[HumanEvalProblem] = []
    while len(out) < count:
        t = rng.choice(templ)
        p = make_problem(t, _constants(t, rng), f"Compose/train/{len(out)}", rng)
        if p.prompt not in held:
            out.append(p)
    return out

