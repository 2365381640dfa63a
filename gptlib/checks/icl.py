"""Exercise checkers for chapter 6 (GPT-3: in-context learning, induction heads).

- :func:`check_build_prompt`: a k-shot prompt builder in the chapter's format;
- :func:`check_induction_score`: the induction score of attention maps on a repeated sequence.
"""
from __future__ import annotations

from typing import Callable

import torch

from gptlib.checks import CheckFailed, _fail, check_close  # noqa: F401

__all__ = ["check_build_prompt", "check_induction_score"]


# ----------------------------------------------------------------------------- prompts


def check_build_prompt(fn: Callable[[list, str], str]) -> str:
    """Check ``fn(examples, query)``: ``"\\nx1=y1\\nx2=y2\\nquery="`` (zero-shot: ``"\\nquery="``)."""
    from gptlib.icl import build_prompt

    cases = [([("kqd", "7"), ("bxa", "2"), ("kqd", "7")], "bxa"), ([("给妈妈打电话", "C")], "呼叫老板"),
             ([], "wbqe")]
    for examples, query in cases:
        got = fn(list(examples), query)
        want = build_prompt(examples, query)
        if not isinstance(got, str):
            _fail(f"the prompt builder returned {type(got).__name__}, expected a str.")
        if got == want:
            continue
        k = len(examples)
        where = f"for a {k}-shot prompt (examples={examples!r}, query={query!r})"
        if got.rstrip("\n") == want.rstrip("\n") or got.strip() == want.strip():
            _fail(f"{where} the text is right but the newlines around it are not: got {got!r}, expected {want!r}.",
                  "every line starts after a newline (also the first), and the prompt ends right after '=': "
                  "no newline at the end, or the model would answer on a new line.")
        if got.replace(" =", "=").replace("= ", "=") == want:
            _fail(f"{where} you wrote ' = ' with spaces: got {got!r}, expected {want!r}.",
                  "the models were trained on lines 'x=y' without spaces; a format they never saw costs accuracy.")
        if k and examples[-1][1] and got.endswith(want[-len(query) - 1:] + examples[-1][1]):
            _fail(f"{where} the prompt ends with an answer: got {got!r}.",
                  "the question's answer must not be in the prompt: end with 'query='.")
        if k and got.count("\n") != want.count("\n"):
            _fail(f"{where} got {got.count(chr(10))} lines, expected {want.count(chr(10))}: got {got!r}, "
                  f"expected {want!r}.", "one line per solved example, then one for the question.")
        _fail(f"{where} got {got!r}, expected {want!r}.",
              "write '\\n' + 'x=y' for each example, then '\\n' + query + '='.")
    return "build_prompt: correct for zero-, one- and few-shot prompts."


# ----------------------------------------------------------------------------- induction


def check_induction_score(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> str:
    """Check ``fn(att, length)`` on attention maps ``(..., 2L, 2L)`` of a sequence repeated once:
    the mean, over queries ``t`` in the second half, of ``att[..., t, t - length + 1]``."""
    from gptlib.icl import induction_score_from_attention

    g = torch.Generator().manual_seed(6)
    length = 7
    T = 2 * length
    raw = torch.rand(3, 2, T, T, generator=g)
    att = torch.tril(raw)
    att = att / att.sum(-1, keepdim=True)
    got = fn(att.clone(), length)
    want = induction_score_from_attention(att, length)
    if not isinstance(got, torch.Tensor):
        got = torch.as_tensor(got)
    if got.shape != want.shape:
        _fail(f"for attention of shape {tuple(att.shape)} you returned shape {tuple(got.shape)}, "
              f"expected {tuple(want.shape)}: one score per head.",
              "average over the query positions only (the second-to-last dimension), keep the leading ones.")
    if torch.allclose(got.double(), want.double(), atol=1e-6):
        # and a perfect induction head must score 1
        perfect = torch.zeros(T, T)
        perfect[0, 0] = 1
        for t in range(1, T):
            perfect[t, max(0, t - length + 1) if t >= length else 0] = 1
        score = float(torch.as_tensor(fn(perfect, length)))
        if abs(score - 1) > 1e-6:
            _fail(f"a perfect induction head scores {score:.3f}, expected 1.")
        return "induction score: correct."
    q = torch.arange(length, T)
    wrong = {
        "the previous occurrence itself (t - length), not the token after it":
            att[..., q, q - length].mean(-1),
        "the previous token (t - 1)": att[..., q, q - 1].mean(-1),
        "all queries, including the first half where nothing repeats yet":
            torch.stack([att[..., t, max(t - length + 1, 0)] for t in range(T)], -1).mean(-1),
        "a sum instead of a mean over the queries": att[..., q, q - length + 1].sum(-1),
        "the keys and queries swapped (att[..., key, query])": att[..., q - length + 1, q].mean(-1),
    }
    for what, value in wrong.items():
        if got.shape == value.shape and torch.allclose(got.double(), value.double(), atol=1e-6):
            _fail(f"your score measures {what}.",
                  "for a query t in the second half, the token after the previous occurrence of token t is at "
                  "t - length + 1; average att[..., t, t - length + 1] over t = length ... 2*length - 1.")
    check_close(got, want, "induction scores", atol=1e-6,
                hint="for each query t in the second half, take att[..., t, t - length + 1], then average.")
    return "induction score: correct."
