"""Exercise checkers for chapters 11-14: SFT labels, win rates, rankings, GAE, PPO, DPO, tools."""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from gptlib.checks import CheckFailed, _fail, check_close, checker  # noqa: F401

__all__ = [
    "check_sft_labels",
    "check_win_rate",
    "check_ranking_pairs",
    "check_ranking_loss",
    "check_gae",
    "check_ppo_clip_loss",
    "check_dpo_loss",
    "check_calculator",
]


# ----------------------------------------------------------------------------- chapter 11


@checker
def check_sft_labels(fn: Callable[[list[int], list[int]], tuple[list[int], list[int]]]) -> str:
    """``make_labels(prompt_ids, response_ids) -> (inputs, labels)``: shifted, prompt labels
    -100."""
    from gptlib.rlhf.sft import IGNORE

    cases = [([5, 6, 7, 8], [1, 2, 3]), ([9], [4, 4]), ([3, 1, 4, 1, 5, 9], [2])]
    for prompt, response in cases:
        full = prompt + response
        expected = (full[:-1], [IGNORE] * (len(prompt) - 1) + response)
        try:
            got = fn(list(prompt), list(response))
        except Exception as err:  # noqa: BLE001 - show the reader what went wrong
            _fail(f"make_labels({prompt}, {response}) raised {type(err).__name__}: {err}")
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            _fail(
                f"make_labels returned {type(got).__name__}, expected a pair (inputs, labels).",
                "return two lists: return inputs, labels",
            )
        inputs, labels = (list(torch.as_tensor(v).tolist()) for v in got)
        where = f"for prompt {prompt} and response {response}"
        if inputs == full:
            _fail(
                f"inputs {where} are the whole sequence; the last token has nothing to predict.",
                "inputs = (prompt + response)[:-1], labels = (prompt + response)[1:] with the "
                "prompt part masked.",
            )
        if inputs != expected[0]:
            _fail(
                f"inputs {where}: got {inputs}, expected {expected[0]}.",
                "inputs = (prompt + response)[:-1].",
            )
        if len(labels) != len(inputs):
            _fail(
                f"labels {where} have {len(labels)} entries, inputs {len(inputs)}: one label per "
                "input position."
            )
        if len(prompt) > 1 and labels == full[1:]:
            _fail(
                f"labels {where} are not masked: the model would also learn to predict the user's "
                "prompt.",
                f"set the labels of prompt tokens to {IGNORE} (cross entropy ignores them).",
            )
        if labels == [IGNORE] * len(prompt) + response[1:]:
            _fail(
                f"labels {where} also mask the first response token (off by one).",
                "the last prompt position predicts the first response token: keep that label.",
            )
        if labels != expected[1]:
            _fail(
                f"labels {where}: got {labels}, expected {expected[1]}.",
                "labels = (prompt + response)[1:] with the first len(prompt) - 1 entries set to "
                f"{IGNORE}.",
            )
    return "make_labels: correct; only response tokens are learned."


@checker
def check_win_rate(fn: Callable[[Sequence[float], Sequence[float]], float]) -> str:
    """``win_rate(scores_a, scores_b)``: fraction of a > b, ties counted as half a win."""
    cases = [
        ([1.0, 0.0, 0.5, 0.2], [0.0, 1.0, 0.5, 0.1], 0.625),
        ([1, 1, 1], [0, 0, 0], 1.0),
        ([0.3, 0.3], [0.3, 0.3], 0.5),
    ]
    for a, b, expected in cases:
        try:
            got = float(fn(list(a), list(b)))
        except Exception as err:  # noqa: BLE001
            _fail(f"win_rate({a}, {b}) raised {type(err).__name__}: {err}")
        if math.isclose(got, sum(x > y for x, y in zip(a, b)) / len(a)) and not math.isclose(
            got, expected
        ):
            _fail(
                f"win_rate({a}, {b}) = {got:g}: ties count as losses.",
                "a tie is half a win for each side: add 0.5.",
            )
        if math.isclose(got, sum(x > y for x, y in zip(a, b))) and not math.isclose(got, expected):
            _fail(
                f"win_rate({a}, {b}) = {got:g} is a count, not a fraction.",
                "divide by the number of prompts.",
            )
        if not math.isclose(got, expected, abs_tol=1e-9):
            _fail(
                f"win_rate({a}, {b}) = {got:g}, expected {expected:g}.",
                "per prompt: 1 if a > b, 0.5 if a == b, 0 otherwise; then the mean.",
            )
    return "win_rate: correct, ties split."


# ----------------------------------------------------------------------------- chapter 12


@checker
def check_ranking_pairs(fn: Callable[[Sequence[int]], list[tuple[int, int]]]) -> str:
    """``all_pairs(ranking)``: every (winner, loser) pair of a best-first ranking, C(K, 2) of
    them."""
    for ranking in ([0, 1], [2, 0, 1], [3, 1, 0, 2], [4, 7, 0, 2, 8, 1, 6, 3, 5]):
        K = len(ranking)
        expected = {(ranking[i], ranking[j]) for i, j in itertools.combinations(range(K), 2)}
        try:
            got = [tuple(int(v) for v in pair) for pair in fn(list(ranking))]
        except Exception as err:  # noqa: BLE001
            _fail(f"all_pairs({ranking}) raised {type(err).__name__}: {err}")
        if K > 2 and len(got) == K - 1:
            _fail(
                f"all_pairs({ranking}) gave {K - 1} pairs: only neighbours in the ranking.",
                f"a ranking of K = {K} holds C(K, 2) = {K * (K - 1) // 2} pairs: every answer "
                "beats every later one.",
            )
        if {(b, a) for a, b in got} == expected:
            _fail(
                f"all_pairs({ranking}): the pairs are (loser, winner); the ranking lists the best "
                "first.",
                "ranking[i] beats ranking[j] whenever i < j.",
            )
        if len(got) == K * (K - 1):
            _fail(
                f"all_pairs({ranking}) gave K(K-1) = {len(got)} pairs: each pair counted in both "
                "orders.",
                "take i < j only (itertools.combinations).",
            )
        if len(got) != len(set(got)) or set(got) != expected:
            _fail(
                f"all_pairs({ranking}) = {got[:6]}{'...' if len(got) > 6 else ''}, expected the "
                f"{len(expected)} pairs (ranking[i], ranking[j]) for i < j.",
                "two loops, i from 0 and j from i + 1, or itertools.combinations(range(K), 2).",
            )
    return "all_pairs: correct, C(K, 2) pairs per ranking."


def _reference_ranking_loss(rewards: torch.Tensor, ranking: Sequence[int]) -> torch.Tensor:
    w = torch.tensor([ranking[i] for i, _ in itertools.combinations(range(len(ranking)), 2)])
    lo = torch.tensor([ranking[j] for _, j in itertools.combinations(range(len(ranking)), 2)])
    return -F.logsigmoid(rewards[w] - rewards[lo]).mean()


@checker
def check_ranking_loss(fn: Callable[[torch.Tensor, Sequence[int]], torch.Tensor]) -> str:
    """``ranking_loss(rewards (K,), ranking)`` = mean over the C(K,2) pairs of -log sigmoid(r_w -
    r_l)."""
    g = torch.Generator().manual_seed(0)
    for K in (2, 4, 9):
        rewards = torch.randn(K, generator=g, dtype=torch.float64)
        ranking = torch.randperm(K, generator=g).tolist()
        expected = _reference_ranking_loss(rewards, ranking)
        try:
            got = torch.as_tensor(fn(rewards.clone(), list(ranking))).double()
        except Exception as err:  # noqa: BLE001
            _fail(f"ranking_loss raised {type(err).__name__}: {err}")
        if got.numel() != 1:
            _fail(
                f"ranking_loss returned shape {tuple(got.shape)}; expected one number (the mean "
                "over pairs)."
            )
        got = got.reshape(())
        flipped = _reference_ranking_loss(rewards, ranking[::-1])
        if torch.isclose(got, flipped, atol=1e-6) and not torch.isclose(got, expected, atol=1e-6):
            _fail(
                f"ranking_loss with K = {K} rewards the worse answer: the sign of r_w - r_l is "
                "flipped.",
                "the ranking is best first: the loss is -log sigmoid(r[winner] - r[loser]).",
            )
        n_pairs = K * (K - 1) // 2
        if K > 2 and torch.isclose(got, expected * n_pairs, atol=1e-6):
            _fail(
                f"ranking_loss with K = {K} is the sum over pairs, not the mean.",
                f"divide by C(K, 2) = {n_pairs} (InstructGPT's 1 / C(K, 2)) so K does not scale "
                "the loss.",
            )
        adjacent = -F.logsigmoid(rewards[ranking[:-1]] - rewards[ranking[1:]]).mean()
        if K > 2 and torch.isclose(got, adjacent, atol=1e-6):
            _fail(
                f"ranking_loss with K = {K} uses only neighbouring pairs ({K - 1} of {n_pairs}).",
                "use every pair (i < j) of the ranking, not just neighbours.",
            )
        check_close(
            got,
            expected,
            f"ranking_loss with K = {K}",
            atol=1e-6,
            hint="mean over all pairs i < j of -logsigmoid(rewards[ranking[i]] - "
            "rewards[ranking[j]]).",
        )
    big = torch.tensor([0.0, 200.0], dtype=torch.float64)
    got = torch.as_tensor(fn(big.clone(), [0, 1])).double().reshape(())
    if not torch.isfinite(got):
        _fail(
            "ranking_loss is inf for a reward gap of 200: log(sigmoid(x)) underflows.",
            "use torch.nn.functional.logsigmoid(x), which is stable for large |x|.",
        )
    check_close(
        got,
        torch.tensor(200.0, dtype=torch.float64),
        "ranking_loss for a gap of -200",
        atol=1e-4,
        hint="use torch.nn.functional.logsigmoid(x).",
    )
    return "ranking_loss: correct, all C(K, 2) pairs, numerically stable."


# ----------------------------------------------------------------------------- chapter 13


@checker
def check_gae(fn) -> str:
    """Check ``fn(rewards (T,), values (T,), gamma, lam) -> advantages (T,)`` (one episode, V_T =
    0)."""
    from gptlib.rlhf.ppo_math import gae_reference

    g = torch.Generator().manual_seed(13)
    r, v = torch.randn(7, generator=g), torch.randn(7, generator=g)
    for gamma, lam in [(1.0, 0.95), (0.9, 0.8), (0.99, 0.0), (1.0, 1.0)]:
        out = fn(r.clone(), v.clone(), gamma, lam)
        if isinstance(out, tuple):
            _fail(
                "gae returned a tuple; expected only the (7,) advantages.",
                "return one advantage per time step, not (advantages, returns).",
            )
        out = torch.as_tensor(out, dtype=torch.float32)
        if tuple(out.shape) != (7,):
            _fail(
                f"gae returned shape {tuple(out.shape)} for 7 rewards; expected (7,) advantages.",
                "return one advantage per time step (a tuple (advantages, returns) is not what is "
                "asked).",
            )
        ref = torch.tensor(gae_reference(r.tolist(), v.tolist(), gamma, lam))
        if torch.allclose(out.float(), ref + v, atol=1e-4):
            _fail(
                "you returned the returns (advantages + values), not the advantages.",
                "A_t = delta_t + gamma * lam * A_{t+1}; the value target is A_t + V_t, but gae "
                "asks for A_t.",
            )
        no_lam = torch.tensor(gae_reference(r.tolist(), v.tolist(), gamma, 1.0))
        if lam != 1.0 and torch.allclose(out.float(), no_lam, atol=1e-4):
            _fail(
                f"with lam={lam} your advantages equal the lam=1 ones: lambda is ignored.",
                "the recursion is A_t = delta_t + gamma * lam * A_{t+1} (both factors).",
            )
        wrap = torch.tensor(gae_reference(r.tolist(), v.tolist(), gamma, lam))
        check_close(
            out.float(),
            wrap,
            f"GAE advantages (gamma={gamma}, lam={lam})",
            atol=1e-4,
            hint="go backwards from the last step; delta_t = r_t + gamma * V_{t+1} - V_t with V_T "
            "= 0 "
            "after the last token (the episode ends), and A_t = delta_t + gamma * lam * A_{t+1}.",
        )
    return "gae: matches the definition for four (gamma, lambda) settings."


@checker
def check_ppo_clip_loss(fn) -> str:
    """Check ``fn(logprobs, old_logprobs, advantages, clip_range) -> scalar loss`` (to minimise)."""
    from gptlib.rlhf.ppo_math import ppo_policy_loss

    g = torch.Generator().manual_seed(14)
    old = torch.randn(4, 6, generator=g)
    new = old + 0.6 * torch.randn(4, 6, generator=g)
    adv = torch.randn(4, 6, generator=g)
    for eps in (0.2, 0.1):
        out = fn(new.clone(), old.clone(), adv.clone(), eps)
        out = torch.as_tensor(out)
        if out.dim() != 0:
            _fail(
                f"the loss has shape {tuple(out.shape)}; expected a scalar.",
                "average over all tokens: .mean().",
            )
        ref, _ = ppo_policy_loss(new, old, adv, None, eps)
        ratio = (new - old).exp()
        if abs(out.item() + ref.item()) < 1e-5 and abs(ref.item()) > 1e-3:
            _fail(
                "your loss has the opposite sign: it is the objective to maximise.",
                "optimisers minimise, so return minus the clipped surrogate.",
            )
        if abs(out.item() - (-(ratio * adv).mean()).item()) < 1e-5:
            _fail(
                "no clipping: your loss equals the plain policy-gradient surrogate -mean(ratio * "
                "A).",
                "take min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) before negating and "
                "averaging.",
            )
        if abs(out.item() - (-(ratio.clamp(1 - eps, 1 + eps) * adv)).mean().item()) < 1e-5:
            _fail(
                "you use only the clipped term; PPO takes the *minimum* of the clipped and "
                "unclipped terms.",
                "the pessimistic bound: min(ratio * A, clip(ratio) * A).",
            )
        check_close(
            out,
            ref,
            f"clipped PPO loss (eps={eps})",
            atol=1e-5,
            hint="ratio = exp(logprobs - old_logprobs) (log-probs: subtract, then exp); "
            "loss = -mean(min(ratio * A, clamp(ratio, 1 - eps, 1 + eps) * A)).",
        )
    return "clipped PPO loss: correct."


@checker
def check_dpo_loss(fn) -> str:
    """Check ``fn(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta) -> scalar`` (mean DPO
    loss)."""
    from gptlib.rlhf.dpo import dpo_loss

    g = torch.Generator().manual_seed(15)
    pw, pl, rw, rl = (torch.randn(8, generator=g) * 3 for _ in range(4))
    for beta in (0.1, 0.5):
        out = torch.as_tensor(fn(pw.clone(), pl.clone(), rw.clone(), rl.clone(), beta))
        if out.dim() != 0:
            _fail(
                f"the loss has shape {tuple(out.shape)}; expected a scalar (the mean over pairs).",
                "average the per-pair losses with .mean().",
            )
        ref = dpo_loss(pw, pl, rw, rl, beta)[0]
        no_ref = torch.nn.functional.softplus(-beta * (pw - pl)).mean()
        if abs(out.item() - no_ref.item()) < 1e-5:
            _fail(
                "your loss ignores the reference model.",
                "use the log-ratios (log pi - log pi_ref) of the chosen and of the rejected "
                "answer.",
            )
        swapped = torch.nn.functional.softplus(beta * ((pw - rw) - (pl - rl))).mean()
        if abs(out.item() - swapped.item()) < 1e-5:
            _fail(
                "chosen and rejected are swapped (or the sign is): your loss rewards the rejected "
                "answer.",
                "loss = -log sigmoid(beta * (chosen log-ratio - rejected log-ratio)).",
            )
        no_beta = torch.nn.functional.softplus(-((pw - rw) - (pl - rl))).mean()
        if abs(out.item() - no_beta.item()) < 1e-5:
            _fail("beta is missing: it scales the log-ratio difference inside the sigmoid.", None)
        summed = torch.nn.functional.softplus(-beta * ((pw - rw) - (pl - rl))).sum()
        if abs(out.item() - summed.item()) < 1e-4:
            _fail(
                "you summed over the pairs; the loss is the mean.", "use .mean() instead of .sum()."
            )
        check_close(
            out,
            ref,
            f"DPO loss (beta={beta})",
            atol=1e-5,
            hint="-log sigmoid(z) with z = beta * ((pi_w - ref_w) - (pi_l - ref_l)); "
            "F.logsigmoid or softplus(-z) keep it finite for large |z|.",
        )
    big = torch.tensor([-2000.0])
    z = torch.zeros(1)
    out = torch.as_tensor(fn(big, -big, z, z, 1.0))
    if not torch.isfinite(out).all():
        _fail(
            "the loss overflows to inf for a very wrong pair (margin -4000).",
            "compute -log(sigmoid(z)) as F.softplus(-z) or -F.logsigmoid(z), not "
            "log(1/(1+exp(-z))).",
        )
    return "DPO loss: correct and numerically stable."


# ----------------------------------------------------------------------------- chapter 14


@checker
def check_calculator(fn) -> str:
    """Check a safe arithmetic evaluator ``fn(expr: str) -> number`` (+ - * / and parentheses, no
    eval)."""
    cases = {
        "12*7": 84,
        "2+3*4": 14,
        "(2+3)*4": 20,
        "100-1-1": 98,
        "-5+2": -3,
        "7/2": 3.5,
        "8/2/2": 2,
        " 3 * ( 4 - 1 ) ": 9,
        "2*-3": -6,
        "45": 45,
    }
    for expr, want in cases.items():
        try:
            got = fn(expr)
        except Exception as e:  # noqa: BLE001 - report any failure on valid input
            _fail(
                f"calculator({expr!r}) raised {type(e).__name__}: {e}",
                "valid arithmetic must evaluate.",
            )
        if not isinstance(got, (int, float)) or isinstance(got, bool) or abs(got - want) > 1e-9:
            hint = None
            if expr in ("100-1-1", "8/2/2"):
                hint = (
                    "- and / are left-associative: 100-1-1 = (100-1)-1, so loop over terms "
                    "instead of recursing right."
                )
            elif expr in ("2+3*4",):
                hint = (
                    "* and / bind tighter than + and -: parse terms (products) inside "
                    "expressions (sums)."
                )
            _fail(f"calculator({expr!r}) = {got!r}, expected {want}.", hint)
    for bad in ("abs(-3)", "__import__('os')", "2**3", "1+", "3 4", "", "(1", "x*2", "1/0"):
        try:
            got = fn(bad)
        except ValueError:
            continue
        except ZeroDivisionError:
            _fail(
                f"calculator({bad!r}) raised ZeroDivisionError; raise a ValueError with a clear "
                "message.",
                "check the divisor before dividing.",
            )
        except Exception as e:  # noqa: BLE001
            _fail(
                f"calculator({bad!r}) raised {type(e).__name__}; it should raise ValueError.",
                "anything that is not + - * / ( ) and numbers is an error the tool reports, not a "
                "crash.",
            )
        _fail(
            f"calculator({bad!r}) returned {got!r}; it must refuse with ValueError.",
            "never eval() model output: accept only digits, + - * / and parentheses.",
        )
    return "calculator: correct, and it refuses everything that is not arithmetic."
