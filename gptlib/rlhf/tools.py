"""Chapter 14's tool use: arithmetic questions answered directly or through a calculator call.

Two small models learn the same problems (two-digit sums and products): one writes the answer
(``"1314\\n"``), the other writes a call and then the tool's result
(``"<calc>73*18</calc>1314\\n"``). The recipe ``rlhf`` trains both (assets ``rlhf/calc-direct``
and ``rlhf/calc-tool``); chapter 14 runs the calls with its own safe calculator.
"""

from __future__ import annotations

import random

from gptlib.rlhf.world import format_prompt
from gptlib.tokenizer import CharTokenizer

__all__ = ["arithmetic", "ask", "arithmetic_problems", "calc_tokenizer", "tool_demonstrations"]


def arithmetic(rng: random.Random) -> tuple[str, int]:
    """One problem ``("73*18", 1314)``: a two-digit number plus or times a number below 100."""
    a, b, op = rng.randint(10, 99), rng.randint(2, 99), rng.choice("+*")
    return f"{a}{op}{b}", (a * b if op == "*" else a + b)


def ask(expr: str) -> str:
    """The question as a prompt: ``format_prompt(["What is 73*18?"])``."""
    return format_prompt([f"What is {expr}?"])


def arithmetic_problems(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` problems from ``random.Random(seed)`` (the training problems: seed 0)."""
    rng = random.Random(seed)
    return [arithmetic(rng) for _ in range(n)]


def calc_tokenizer(problems) -> CharTokenizer:
    """The characters of the questions, the digits and the call syntax ``<calc>...</calc>``."""
    return CharTokenizer(sorted(set("".join(ask(e) for e, _ in problems) + "<calc>/0123456789\n")))


def tool_demonstrations(problems, use_tool: bool) -> list[tuple[str, str]]:
    """``(prompt, response)`` pairs: the answer, or the call followed by the tool's result."""
    if use_tool:
        return [(ask(e), f"<calc>{e}</calc>{v}\n") for e, v in problems]
    return [(ask(e), f"{v}\n") for e, v in problems]
