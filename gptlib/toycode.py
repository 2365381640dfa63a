"""A seeded corpus of small Python functions with unit tests, and holes cut out of them.

Chapter 9 measures infilling on code where the text *after* a hole decides what the hole
must say. Each function is one of ten loops (sum, count, filter, map, max, product...) with
a docstring that says what it does and three unit tests. The accumulator's name is drawn
from :data:`NAMES`, a pool of 200 (``big_total``, ``prev_tally``...): the line that binds it
(``big_total = 0``) is the first place it appears, and every line below uses it. A model
that sees only the code above that line can do no better than guess among the 200 names
(``ln 200 = 5.3`` nats); a model that has read the code below can copy the name.

* :func:`function_corpus`: ``n`` distinct functions for a seed (held-out sets exclude the
  training ones);
* :func:`make_hole`: a hole of one kind (``"bind"``: the line that binds the accumulator;
  ``"line"``, ``"lines"``, ``"body"``: whole lines);
* :func:`random_hole`: a hole cut at two random characters, as in FIM training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

__all__ = [
    "NAMES",
    "CodeTask",
    "make_function",
    "function_corpus",
    "Hole",
    "HOLE_KINDS",
    "make_hole",
    "random_hole",
]

_ARGS = ["values", "items", "nums", "xs", "data", "seq", "numbers", "arr"]
_VARS = ["v", "x", "item", "n", "e", "num", "val", "y"]
_ADJ = [
    "big",
    "small",
    "old",
    "new",
    "raw",
    "net",
    "full",
    "half",
    "top",
    "low",
    "high",
    "last",
    "first",
    "main",
    "temp",
    "final",
    "base",
    "cur",
    "prev",
    "next",
]
_NOUN = ["sum", "total", "count", "acc", "out", "res", "tally", "score", "value", "bag"]
#: The accumulator names: 20 adjectives x 10 nouns, so the pool alone is worth ln 200 nats.
NAMES: tuple[str, ...] = tuple(f"{a}_{n}" for a in _ADJ for n in _NOUN)

# (docstring, function-name stems, body lines): {a} argument, {r} accumulator, {v} loop
# variable, {k} constant. The first body line binds {r}; every later line may use it.
_TEMPLATES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    (
        "Return the sum of {a}, each times {k}.",
        ("scaled_sum", "sum_times", "weighted_total"),
        ("{r} = 0", "for {v} in {a}:", "    {r} += {v} * {k}", "return {r}"),
    ),
    (
        "Count the items of {a} greater than {k}.",
        ("count_above", "num_greater", "how_many_over"),
        ("{r} = 0", "for {v} in {a}:", "    if {v} > {k}:", "        {r} += 1", "return {r}"),
    ),
    (
        "Return the items of {a} below {k}.",
        ("keep_below", "small_items", "filter_under"),
        (
            "{r} = []",
            "for {v} in {a}:",
            "    if {v} < {k}:",
            "        {r}.append({v})",
            "return {r}",
        ),
    ),
    (
        "Add {k} to each item of {a}.",
        ("add_to_all", "shift_up", "plus_each"),
        ("{r} = []", "for {v} in {a}:", "    {r}.append({v} + {k})", "return {r}"),
    ),
    (
        "Return the largest item of {a}.",
        ("largest", "max_of", "biggest"),
        ("{r} = {a}[0]", "for {v} in {a}:", "    if {v} > {r}:", "        {r} = {v}", "return {r}"),
    ),
    (
        "Return the smallest item of {a}.",
        ("smallest", "min_of", "lowest"),
        ("{r} = {a}[0]", "for {v} in {a}:", "    if {v} < {r}:", "        {r} = {v}", "return {r}"),
    ),
    (
        "Count the multiples of {k} in {a}.",
        ("count_multiples", "num_divisible", "multiples_of"),
        ("{r} = 0", "for {v} in {a}:", "    if {v} % {k} == 0:", "        {r} += 1", "return {r}"),
    ),
    (
        "Return the product of {a}.",
        ("product", "multiply_all", "prod_of"),
        ("{r} = 1", "for {v} in {a}:", "    {r} *= {v}", "return {r}"),
    ),
    (
        "Return each item of {a} times {k}.",
        ("scale_all", "times_each", "multiply_each"),
        ("{r} = []", "for {v} in {a}:", "    {r}.append({v} * {k})", "return {r}"),
    ),
    (
        "Return the sum of the items of {a} above {k}.",
        ("sum_above", "total_over", "big_sum"),
        ("{r} = 0", "for {v} in {a}:", "    if {v} > {k}:", "        {r} += {v}", "return {r}"),
    ),
]


def _product(xs: list[int]) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


#: What each template computes: the expected values of the unit tests (a test checks that
#: every template's code agrees with its reference).
_REFERENCE: list[Callable[[list[int], int], Any]] = [
    lambda xs, k: sum(x * k for x in xs),
    lambda xs, k: sum(x > k for x in xs),
    lambda xs, k: [x for x in xs if x < k],
    lambda xs, k: [x + k for x in xs],
    lambda xs, k: max(xs),
    lambda xs, k: min(xs),
    lambda xs, k: sum(x % k == 0 for x in xs),
    lambda xs, k: _product(xs),
    lambda xs, k: [x * k for x in xs],
    lambda xs, k: sum(x for x in xs if x > k),
]


@dataclass
class CodeTask:
    """One function of the corpus: its source, unit tests (``assert`` lines) and parts."""

    source: str
    tests: list[str]
    name: str
    arg: str
    acc: str
    var: str
    k: int
    template: int

    @property
    def program(self) -> str:
        """The function followed by its tests: passes when run."""
        return self.source + "\n" + "\n".join(self.tests) + "\n"

    @property
    def body_lines(self) -> list[str]:
        """The lines after the docstring (each with its ``\\n``)."""
        return self.source.splitlines(keepends=True)[2:]


def make_function(rng: random.Random) -> CodeTask:
    """Draw one function: a template, random names, a constant, and three unit tests."""
    t = rng.randrange(len(_TEMPLATES))
    doc, stems, body = _TEMPLATES[t]
    arg = rng.choice(_ARGS)
    acc = rng.choice(NAMES)
    var = rng.choice(_VARS)
    k = rng.randint(2, 9)
    name = rng.choice(stems) + rng.choice(["", "_" + str(rng.randint(1, 9))])
    fill = dict(a=arg, r=acc, v=var, k=k)
    lines = [f"def {name}({arg}):", f'    """{doc.format(**fill)}"""']
    lines += ["    " + line.format(**fill) for line in body]
    source = "\n".join(lines) + "\n"
    tests = []
    for _ in range(3):
        xs = [rng.randint(-3, 12) for _ in range(rng.randint(1, 5))]
        tests.append(f"assert {name}({xs!r}) == {_REFERENCE[t](xs, k)!r}")
    return CodeTask(source, tests, name, arg, acc, var, k, t)


def function_corpus(
    n: int, seed: int = 0, exclude: Sequence[str] | set[str] = ()
) -> list[CodeTask]:
    """``n`` distinct functions drawn with ``seed``; sources in ``exclude`` are skipped.

    ``function_corpus(m, seed)`` is the start of ``function_corpus(n, seed)`` for ``m < n``.
    Held-out sets pass the training sources as ``exclude``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    rng = random.Random(seed)
    seen = set(exclude)
    out: list[CodeTask] = []
    tries = 0
    while len(out) < n:
        task = make_function(rng)
        tries += 1
        if tries > 50 * n + 1000:
            raise ValueError(
                f"could not draw {n} distinct functions (the template space is too small)."
            )
        if task.source in seen:
            continue
        seen.add(task.source)
        out.append(task)
    return out


@dataclass
class Hole:
    """A hole in a function: the model sees ``prefix`` (and, with FIM, ``suffix``) and writes
    ``middle``."""

    prefix: str
    middle: str
    suffix: str
    kind: str

    @property
    def n_lines(self) -> int:
        return self.middle.count("\n")

    def filled(self, middle: str) -> str:
        """The function with ``middle`` in the hole."""
        return self.prefix + middle + self.suffix


HOLE_KINDS = ("bind", "line", "lines", "body")


def make_hole(task: CodeTask, kind: str, rng: random.Random | None = None) -> Hole:
    """Cut a hole of one ``kind`` out of a function (whole lines, never the signature or docstring).

    ``"bind"``: the first body line, which binds the accumulator (its name appears nowhere
    above, everywhere below); ``"line"``: one random body line; ``"lines"``: two or three
    consecutive body lines; ``"body"``: every line between the docstring and the final
    ``return`` (the unit tests can judge it).
    """
    lines = task.source.splitlines(keepends=True)
    first, last = 2, len(lines)  # body lines are lines[2:]
    if kind == "bind":
        i, j = first, first + 1
    elif kind in ("line", "lines"):
        if rng is None:
            raise ValueError(f"a {kind!r} hole is drawn at random: pass rng=random.Random(seed).")
        size = 1 if kind == "line" else rng.choice([2, 3])
        i = rng.randrange(first, last - size + 1)
        j = i + size
    elif kind == "body":
        i, j = first, last - 1
    else:
        raise ValueError(f"kind must be one of {HOLE_KINDS}, got {kind!r}.")
    return Hole("".join(lines[:i]), "".join(lines[i:j]), "".join(lines[j:]), kind)


def random_hole(task: CodeTask, rng: random.Random) -> Hole:
    """A hole between two random character positions of the function (never empty)."""
    n = len(task.source)
    i = rng.randrange(n)
    j = rng.randrange(i + 1, n + 1)
    return Hole(task.source[:i], task.source[i:j], task.source[j:], "random")
