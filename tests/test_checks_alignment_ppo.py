"""Checkers of chapters 13-14: each passes a right answer and fails typical wrong ones with a hint."""
import re

import pytest
import torch
import torch.nn.functional as F

from gptlib.checks import CheckFailed
from gptlib.checks.alignment import check_calculator, check_dpo_loss, check_gae, check_ppo_clip_loss

# ----------------------------------------------------------------------------- GAE

def gae_right(r, v, gamma, lam):
    adv, last = torch.zeros_like(r), 0.0
    for t in reversed(range(len(r))):
        next_v = v[t + 1] if t + 1 < len(r) else 0.0
        last = r[t] + gamma * next_v - v[t] + gamma * lam * last
        adv[t] = last
    return adv


def gae_returns(r, v, gamma, lam):
    return gae_right(r, v, gamma, lam) + v


def gae_no_lam(r, v, gamma, lam):
    return gae_right(r, v, gamma, 1.0)


def gae_wraps(r, v, gamma, lam):  # bootstraps the last step with V_0 (off-by-one / wrap-around)
    adv, last = torch.zeros_like(r), 0.0
    for t in reversed(range(len(r))):
        last = r[t] + gamma * v[(t + 1) % len(r)] - v[t] + gamma * lam * last
        adv[t] = last
    return adv


def test_check_gae():
    assert "matches" in check_gae(gae_right)
    with pytest.raises(CheckFailed, match="returns"):
        check_gae(gae_returns)
    with pytest.raises(CheckFailed, match="lambda is ignored"):
        check_gae(gae_no_lam)
    with pytest.raises(CheckFailed, match="Hint: go backwards"):
        check_gae(gae_wraps)
    with pytest.raises(CheckFailed, match="shape"):
        check_gae(lambda r, v, g, l: gae_right(r, v, g, l)[:-1])


# ----------------------------------------------------------------------------- PPO loss

def clip_right(lp, old, adv, eps):
    ratio = (lp - old).exp()
    return -torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv).mean()


def test_check_ppo_clip_loss():
    assert "correct" in check_ppo_clip_loss(clip_right)
    with pytest.raises(CheckFailed, match="opposite sign"):
        check_ppo_clip_loss(lambda lp, old, adv, eps: -clip_right(lp, old, adv, eps))
    with pytest.raises(CheckFailed, match="no clipping"):
        check_ppo_clip_loss(lambda lp, old, adv, eps: -((lp - old).exp() * adv).mean())
    with pytest.raises(CheckFailed, match="only the clipped term"):
        check_ppo_clip_loss(lambda lp, old, adv, eps: -((lp - old).exp().clamp(1 - eps, 1 + eps) * adv).mean())
    with pytest.raises(CheckFailed, match="Hint: ratio = exp"):  # ratio of log-probs instead of probs
        check_ppo_clip_loss(lambda lp, old, adv, eps: -torch.minimum(
            (lp / old) * adv, (lp / old).clamp(1 - eps, 1 + eps) * adv).mean())
    with pytest.raises(CheckFailed, match="scalar"):
        check_ppo_clip_loss(lambda lp, old, adv, eps: -((lp - old).exp() * adv))


# ----------------------------------------------------------------------------- DPO loss

def dpo_right(pw, pl, rw, rl, beta):
    return -F.logsigmoid(beta * ((pw - rw) - (pl - rl))).mean()


def test_check_dpo_loss():
    assert "correct" in check_dpo_loss(dpo_right)
    with pytest.raises(CheckFailed, match="reference"):
        check_dpo_loss(lambda pw, pl, rw, rl, b: -F.logsigmoid(b * (pw - pl)).mean())
    with pytest.raises(CheckFailed, match="swapped"):
        check_dpo_loss(lambda pw, pl, rw, rl, b: dpo_right(pl, pw, rl, rw, b))
    with pytest.raises(CheckFailed, match="beta is missing"):
        check_dpo_loss(lambda pw, pl, rw, rl, b: dpo_right(pw, pl, rw, rl, 1.0))
    with pytest.raises(CheckFailed, match="summed"):
        check_dpo_loss(lambda pw, pl, rw, rl, b: -F.logsigmoid(b * ((pw - rw) - (pl - rl))).sum())
    with pytest.raises(CheckFailed, match="overflows"):
        check_dpo_loss(lambda pw, pl, rw, rl, b: -torch.log(torch.sigmoid(b * ((pw - rw) - (pl - rl)))).mean())


# ----------------------------------------------------------------------------- calculator

def calc_right(expr):
    tokens = re.findall(r"\d+\.?\d*|[-+*/()]|\S", expr)
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def atom():
        t = peek()
        if t == "-":
            take()
            return -atom()
        if t == "(":
            take()
            v = expr_()
            if take_if(")") is None:
                raise ValueError("missing )")
            return v
        if t is not None and re.fullmatch(r"\d+\.?\d*", t):
            take()
            return float(t) if "." in t else int(t)
        raise ValueError(f"unexpected {t!r}")

    def take_if(s):
        if peek() == s:
            return take()
        return None

    def term():
        v = atom()
        while peek() in ("*", "/"):
            op, rhs = take(), atom()
            if op == "/" and rhs == 0:
                raise ValueError("division by zero")
            v = v * rhs if op == "*" else v / rhs
        return v

    def expr_():
        v = term()
        while peek() in ("+", "-"):
            op, rhs = take(), term()
            v = v + rhs if op == "+" else v - rhs
        return v

    v = expr_()
    if pos != len(tokens):
        raise ValueError(f"unexpected {peek()!r}")
    return v


def test_check_calculator():
    assert "refuses" in check_calculator(calc_right)
    with pytest.raises(CheckFailed, match="must refuse"):
        check_calculator(lambda e: eval(e, {"__builtins__": {"abs": abs}}) if e.strip() else 0)  # noqa: S307
    with pytest.raises(CheckFailed, match="bind tighter"):
        def left_to_right(e):
            if not re.fullmatch(r"[\d+*/() -]+", e):
                raise ValueError(e)
            nums = re.findall(r"\d+", e)
            ops = re.findall(r"[-+*/]", e)
            v = int(nums[0])
            for op, n in zip(ops, nums[1:]):
                v = {"+": v + int(n), "-": v - int(n), "*": v * int(n), "/": v / int(n)}[op]
            return v
        check_calculator(left_to_right)
    with pytest.raises(CheckFailed, match="ZeroDivisionError"):
        def no_zero_check(e):
            v = calc_right(e.replace("1/0", "1/1"))
            if e == "1/0":
                return 1 / 0
            return v
        check_calculator(no_zero_check)
