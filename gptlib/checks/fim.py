"""Exercise checkers for chapter 9 (insert and edit).

- :func:`check_nll_prediction`: a prediction of the middle NLL of both shipped models, judged
  against the measurement;
- :func:`check_char_nll`: the per-character negative log-likelihood of a hole's middle;
- :func:`check_rank_names`: infilling with a left-to-right model by ranking every name of the
  pool by the likelihood of the whole file.
"""

from __future__ import annotations

import math
import random
from typing import Callable

import torch

from gptlib.checks import CheckFailed, _fail, checker  # noqa: F401

__all__ = ["check_nll_prediction", "check_char_nll", "check_rank_names"]


def _shipped():
    from gptlib import assets

    return {how: assets.load(f"fim/{how}") for how in ("fim", "l2r")}


@checker
def check_nll_prediction(predicted: dict, n: int = 60, seed: int = 7) -> str:
    """``predicted = {"l2r": nats, "fim": nats}``: your guess of the mean NLL of the bind line.

    Measured with :func:`gptlib.fim.compare_infilling` on ``n`` fresh functions. Passes when
    the L2R guess is within 2 nats of the measurement and the FIM guess within 2 nats too.
    """
    from gptlib import fim

    if not isinstance(predicted, dict) or set(predicted) != {"l2r", "fim"}:
        _fail(
            f"predicted must be a dict with the keys 'l2r' and 'fim', got {predicted!r}.",
            'write your guesses as numbers, e.g. predicted = {"l2r": 9.0, "fim": 4.0}.',
        )
    try:
        guess = {k: float(v) for k, v in predicted.items()}
    except (TypeError, ValueError):
        _fail(f"the predictions must be numbers (nats), got {predicted!r}.")
    measured = fim.compare_infilling(n, seed)
    lines = [
        f"{how}: predicted {guess[how]:.1f}, measured {measured[how]:.2f} nats per middle"
        for how in ("l2r", "fim")
    ]
    report = "\n".join(lines)
    if abs(guess["l2r"] - measured["l2r"]) > 2:
        _fail(
            f"the left-to-right guess is off by more than 2 nats:\n{report}",
            "the L2R model cannot know the name: ln(len(NAMES)) nats for it alone, plus a "
            "little for the rest of the line.",
        )
    if abs(guess["fim"] - measured["fim"]) > 2:
        _fail(
            f"the FIM guess is off by more than 2 nats:\n{report}",
            "the FIM model reads the name in the suffix: what is left is mostly the first "
            "character of the name (which of the suffix's words is it?).",
        )
    return "prediction within 2 nats of the measurement for both models:\n" + report


def _char_cases(limit: int):
    """One hole of each kind whose FIM context and middle fit in ``limit`` + 1 tokens."""
    from gptlib import fim, toycode

    rng = random.Random(3)
    cases = []
    for kind in ("bind", "line", "lines", "body"):
        for task in toycode.function_corpus(50, seed=11):
            hole = toycode.make_hole(task, kind, rng)
            if len(fim._context(hole, "fim", "spm") + hole.middle) <= limit + 1:
                cases.append(hole)
                break
    return cases


@checker
def check_char_nll(fn: Callable) -> str:
    """Check ``fn(model, tokenizer, hole, how)``: a 1-D tensor, the NLL of each character of
    ``hole.middle`` (nats), SPM prompt for ``how="fim"``, prefix alone for ``"l2r"``."""
    from gptlib import fim
    from gptlib.evaluate import continuation_logprobs

    shipped = _shipped()
    for hole in _char_cases(shipped["fim"].model.config.block_size):
        for how, asset in shipped.items():
            tok = asset.tokenizer
            ctx = tok.encode(fim._context(hole, how, "spm"))
            mid = tok.encode(hole.middle)
            expected = -continuation_logprobs(asset.model, [ctx], [mid], reduce="none")[0]
            got = fn(asset.model, tok, hole, how)
            where = f"for how={how!r} and the hole with middle {hole.middle!r}"
            if not isinstance(got, torch.Tensor):
                try:
                    got = torch.as_tensor(got, dtype=torch.float32)
                except (TypeError, ValueError):
                    _fail(f"{where} you returned {type(got).__name__}, expected a 1-D tensor.")
            got = got.detach().float().flatten().cpu()
            if got.numel() != expected.numel():
                _fail(
                    f"{where} you returned {got.numel()} values, expected one per character "
                    f"of the middle ({expected.numel()}).",
                    "score only the middle's characters: the logits at positions len(context)-1 "
                    "... len(context)+len(middle)-2 predict them.",
                )
            if torch.allclose(got, -expected, atol=1e-3):
                _fail(
                    f"{where} the signs are flipped.", "a negative log-likelihood is -log p >= 0."
                )
            if not torch.allclose(got, expected, atol=1e-3):
                shifted = (ctx[1:], mid) if len(ctx) > 1 else None
                if shifted is not None:
                    other = -continuation_logprobs(asset.model, [shifted[0]], [mid], reduce="none")[
                        0
                    ]
                    if torch.allclose(got, other, atol=1e-3):
                        _fail(
                            f"{where} your context lacks the <EOT> in front.",
                            "documents were trained after an <EOT>: start the context with it.",
                        )
                _fail(
                    f"{where} values differ by up to {(got - expected).abs().max():.3g} nats.",
                    "use the SPM prompt fim.fim_prompt(prefix, suffix, 'spm') for 'fim', the "
                    "prefix for 'l2r', both after EOT; the output at position t predicts "
                    "token t+1.",
                )
    return "per-character NLL: correct for both models on four kinds of holes."


@checker
def check_rank_names(fn: Callable, n: int = 3, seed: int = 5) -> str:
    """Check ``fn(model, tokenizer, prefix, suffix, template) -> name``: the pool name whose
    bind line ``template.format(name=...)`` makes the whole file likeliest. Run with the
    shipped left-to-right model on ``n`` fresh holes; at least ``n - 1`` must be right
    (guessing gets 1 in 200)."""
    from gptlib import fim, toycode

    asset = _shipped()["l2r"]
    train_n = asset.meta["settings"]["n_train"]
    tasks = fim.held_out_tasks(n, seed, train_n)
    right = 0
    for task in tasks:
        hole = toycode.make_hole(task, "bind")
        template = hole.middle.replace(task.acc, "{name}")
        got = fn(asset.model, asset.tokenizer, hole.prefix, hole.suffix, template)
        if not isinstance(got, str):
            _fail(f"your function returned {type(got).__name__}, expected a name (a str).")
        if got not in toycode.NAMES:
            _fail(
                f"{got!r} is not a name of the pool toycode.NAMES.",
                "rank the 200 names of the pool and return the best one.",
            )
        right += got == task.acc
    if right < n - 1:
        _fail(
            f"{right} of {n} names right.",
            "score log p(template.format(name=name) + suffix | EOT + prefix) for each name "
            "and keep the highest; the suffix's uses of the name make the right one far "
            "likelier.",
        )
    return (
        f"{right} of {n} names right: a left-to-right model can fill this hole by scoring "
        f"all {len(toycode.NAMES)} candidates, {len(toycode.NAMES)} forward passes per hole "
        f"(math.log(200) = {math.log(200):.1f} nats of uncertainty resolved by the suffix)."
    )
