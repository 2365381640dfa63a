"""Reward over-optimisation measured as Gao, Schulman and Hilton (2022) did, over a sample pool.

The SFT policy answers each prompt ``N`` times; those samples stand in for the policy (each
sample has probability ``1/N``, identical strings merged). Two ways of pushing on a proxy
reward are then exact and free, with no training:

- **best-of-n**: the probability that the sample of ascending proxy rank ``i`` is the best of
  ``n`` drawn without replacement is ``C(i-1, n-1) / C(N, n)`` (:func:`best_of_n_weights`, the
  unbiased estimator of the rewards Gao et al. use); the KL of best-of-n from the pool is exact
  (:func:`pool_kl` of the with-replacement weights), and ``log n - (n-1)/n`` is only an upper
  bound (:func:`best_of_n_kl_bound`);
- **the KL-regularised optimum** that PPO with KL coefficient ``beta`` converges to,
  ``pi(y) proportional to pi_SFT(y) exp(r(y) / beta)`` (:func:`kl_regularised_weights`).

For each weighting the mean gold and proxy reward and the KL come out of
:func:`pool_curve`; :func:`fit_gao` fits Gao's functional forms to the gold curve,
``d (alpha - beta d)`` for best-of-n and ``d (alpha - beta log d)`` for RL, with
``d = sqrt(KL)``. :func:`fit_proxy` and :func:`proxy_ensemble` are the proxy reward models:
linear reward heads on the SFT model's frozen features (chapter 12's cheap reward model),
trained on a limited number of the labeller's comparisons.

A trained policy is measured the same way at checkpoints along PPO against one proxy:
:func:`proxy_reward_fn` turns a proxy head into PPO's reward, and :func:`policy_point` gives
gold reward, proxy reward and ``KL(pi || pi_SFT)`` from the policy's own samples.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Sequence

import torch

__all__ = [
    "best_of_n_weights",
    "best_of_n_kl_bound",
    "kl_regularised_weights",
    "pool_groups",
    "pool_kl",
    "pool_curve",
    "fit_gao",
    "gao_form",
    "gao_peak",
    "labelled_pairs",
    "fit_proxy",
    "proxy_ensemble",
    "proxy_reward_fn",
    "head_state",
    "head_from_state",
    "policy_point",
]


def best_of_n_weights(n: int, pool: int, replace: bool = False) -> torch.Tensor:
    """``(pool,)``: P(the sample of ascending rank ``i`` is the best of ``n``), ``i = 1..pool``.

    Without replacement (default), ``C(i-1, n-1) / C(pool, n)``: averaging a reward with these
    weights is Gao et al.'s unbiased estimator of best-of-n's expected reward. With
    replacement, ``(i/pool)^n - ((i-1)/pool)^n``: the best-of-n distribution of the pool
    itself (each sample probability 1/pool), whose KL :func:`pool_kl` gives exactly.

    >>> best_of_n_weights(1, 4).tolist()
    [0.25, 0.25, 0.25, 0.25]
    >>> best_of_n_weights(4, 4).tolist()
    [0.0, 0.0, 0.0, 1.0]
    """
    if not 1 <= n <= pool and not (replace and n >= 1):
        raise ValueError(f"best-of-n needs 1 <= n <= pool size ({pool}), got n={n}")
    i = torch.arange(1, pool + 1, dtype=torch.float64)
    if replace:
        return (i / pool) ** n - ((i - 1) / pool) ** n
    log_c = torch.lgamma(i) - torch.lgamma((i - n + 1).clamp(min=1)) - math.lgamma(n)
    log_total = math.lgamma(pool + 1) - math.lgamma(n + 1) - math.lgamma(pool - n + 1)
    w = torch.where(i >= n, torch.exp(log_c - log_total), torch.zeros_like(i))
    return w / w.sum()


def best_of_n_kl_bound(n: int) -> float:
    """``log n - (n-1)/n``: the best-of-n KL usually quoted; an upper bound (Beirami et al.)."""
    return math.log(n) - (n - 1) / n


def kl_regularised_weights(proxy: torch.Tensor, beta: float) -> torch.Tensor:
    """Per row, the weights ``proportional to exp(proxy / beta)``: the optimum of
    ``E[r] - beta KL(pi || pool)`` over a pool whose samples each have probability 1/N."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return torch.softmax(proxy.double() / beta, dim=-1)


def pool_groups(responses: Sequence[Sequence[str]]) -> torch.Tensor:
    """``(prompts, N)`` ids: for each sample, the index of the first identical sample of its row.

    Identical strings are one answer: the KL is computed over distinct answers.
    """
    rows = []
    for row in responses:
        first: dict[str, int] = {}
        rows.append([first.setdefault(r, j) for j, r in enumerate(row)])
    return torch.tensor(rows, dtype=torch.long)


def pool_kl(weights: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Per row, ``KL(p || uniform pool)`` in nats for sample weights ``(prompts, N)``
    (rows summing to 1); with ``groups`` the weights of identical answers are merged first."""
    w = weights.double()
    P, N = w.shape
    if groups is None:
        groups = torch.arange(N).expand(P, N)
    p = torch.zeros(P, N, dtype=torch.float64).scatter_add_(1, groups, w)
    q = torch.zeros(P, N, dtype=torch.float64).scatter_add_(1, groups, torch.full_like(w, 1 / N))
    terms = torch.where(p > 0, p * torch.log(p / q.clamp(min=1e-300)), torch.zeros_like(p))
    return terms.sum(1)


def _best_of_n_rows(proxy: torch.Tensor, n: int, replace: bool) -> torch.Tensor:
    """``(prompts, N)`` best-of-n weights in the pool's own order (ranked by ``proxy``)."""
    order = proxy.argsort(dim=1, stable=True)
    w = best_of_n_weights(n, proxy.shape[1], replace).expand_as(order)
    return torch.zeros_like(w).scatter_(1, order, w)


def pool_curve(
    proxy: torch.Tensor,
    gold: torch.Tensor,
    *,
    ns: Sequence[int] = (),
    betas: Sequence[float] = (),
    groups: torch.Tensor | None = None,
    per_prompt: bool = False,
) -> dict:
    """Mean gold and proxy reward and exact KL of best-of-n (``ns``) or of the KL-regularised
    optimum (``betas``) over a pool: ``proxy`` and ``gold`` are ``(prompts, N)``.

    Best-of-n: rewards by the unbiased estimator (without replacement), KL exactly for the
    best-of-n distribution of the pool (with replacement; ``kl_bound`` is log n - (n-1)/n).
    Ties in ``proxy`` between identical answers do not matter (their weights are merged).
    Returns lists ``kl``, ``gold``, ``proxy`` (and ``per_prompt_gold``, one list per point).
    """
    if (len(ns) == 0) == (len(betas) == 0):
        raise ValueError("give either ns (best-of-n) or betas (KL-regularised optimum)")
    if proxy.shape != gold.shape or proxy.dim() != 2:
        raise ValueError(
            f"proxy and gold must both be (prompts, N), got {tuple(proxy.shape)} "
            f"and {tuple(gold.shape)}"
        )
    proxy, gold = proxy.double(), gold.double()
    out: dict = {"kl": [], "gold": [], "proxy": []}
    if per_prompt:
        out["per_prompt_gold"] = []
    if ns:
        weights = [_best_of_n_rows(proxy, n, replace=False) for n in ns]
        kl_weights = [_best_of_n_rows(proxy, n, replace=True) for n in ns]
        out["n"] = list(ns)
        out["kl_bound"] = [best_of_n_kl_bound(n) for n in ns]
    else:
        weights = kl_weights = [kl_regularised_weights(proxy, b) for b in betas]
        out["beta"] = list(betas)
    for w, wk in zip(weights, kl_weights):
        out["kl"].append(float(pool_kl(wk, groups).mean()))
        g = (w * gold).sum(1)
        out["gold"].append(float(g.mean()))
        out["proxy"].append(float((w * proxy).sum(1).mean()))
        if per_prompt:
            out["per_prompt_gold"].append(g.tolist())
    return out


def gao_form(d, alpha: float, beta: float, form: str):
    """Gao et al.'s gold-reward gain at ``d = sqrt(KL)``: ``d (alpha - beta d)`` (``"bon"``) or
    ``d (alpha - beta log d)`` (``"rl"``; 0 at d = 0)."""
    d = torch.as_tensor(d, dtype=torch.float64)
    if form == "bon":
        return d * (alpha - beta * d)
    if form == "rl":
        return torch.where(
            d > 0, d * (alpha - beta * torch.log(d.clamp(min=1e-12))), torch.zeros_like(d)
        )
    raise ValueError(f"form must be 'bon' (best-of-n) or 'rl', got {form!r}")


def fit_gao(kl: Sequence[float], gain: Sequence[float], form: str) -> tuple[float, float]:
    """Least-squares ``(alpha, beta)`` of :func:`gao_form` to gold gains (gold minus the
    policy's own) at KLs ``kl`` (the forms are linear in alpha and beta)."""
    d = torch.as_tensor(kl, dtype=torch.float64).clamp(min=0).sqrt()
    y = torch.as_tensor(gain, dtype=torch.float64)
    keep = d > 0
    d, y = d[keep], y[keep]
    if d.numel() < 2:
        raise ValueError("fit_gao needs at least two points with KL > 0")
    if form == "bon":
        second = -d * d
    elif form == "rl":
        second = -d * torch.log(d)
    else:
        raise ValueError(f"form must be 'bon' (best-of-n) or 'rl', got {form!r}")
    X = torch.stack([d, second], 1)
    sol = torch.linalg.lstsq(X, y.unsqueeze(1)).solution.squeeze(1)
    return float(sol[0]), float(sol[1])


def gao_peak(alpha: float, beta: float, form: str) -> float:
    """The KL (nats) at which the fitted gold curve peaks: ``d* = alpha / (2 beta)`` for
    best-of-n, ``d* = exp(alpha / beta - 1)`` for RL; ``inf`` when it never turns down."""
    if beta <= 0:
        return math.inf
    if form == "bon":
        return (alpha / (2 * beta)) ** 2
    if form == "rl":
        return math.exp(min(2 * (alpha / beta - 1), 700.0))
    raise ValueError(f"form must be 'bon' (best-of-n) or 'rl', got {form!r}")


def labelled_pairs(
    world,
    prompts: Sequence,
    responses: Sequence[Sequence[str]],
    *,
    noise: float = 0.0,
    seed: int = 0,
) -> list[tuple[int, int]]:
    """The labeller's comparisons of each prompt's responses, as ``(winner, loser)`` indices
    into the flattened ``responses`` (row-major). Each prompt's distinct answers are ranked by
    ``world.rank`` with ``noise`` and every pair of the ranking is kept (InstructGPT's C(K, 2))."""
    rng = random.Random(f"overopt-pairs-{noise}-{seed}")
    pairs, start = [], 0
    for p, row in zip(prompts, responses):
        first: dict[str, int] = {}
        for j, r in enumerate(row):
            first.setdefault(r, j)
        distinct = list(first.values())
        if len(distinct) >= 2:
            rank = world.rank(p, [row[j] for j in distinct], noise=noise, rng=rng)
            for a, b in itertools.combinations(rank, 2):
                pairs.append((start + distinct[a], start + distinct[b]))
        start += len(row)
    return pairs


def fit_proxy(
    train_features: torch.Tensor,
    pairs: Sequence[tuple[int, int]],
    *,
    iters: int = 300,
    seed: int = 0,
) -> torch.nn.Linear:
    """A proxy reward model: a linear head on frozen features, fitted on ``pairs`` with the
    pairwise loss, then shifted and scaled so that it scores the training samples with mean 0
    and standard deviation 1 (so that proxies trained on different data share a scale)."""
    from gptlib.rlhf.reward import fit_linear_reward

    if len(pairs) == 0:
        raise ValueError("fit_proxy needs at least one (winner, loser) pair")
    win = torch.tensor([a for a, _ in pairs])
    lose = torch.tensor([b for _, b in pairs])
    head = fit_linear_reward(train_features, win, lose, iters=iters, seed=seed)
    with torch.no_grad():
        s = head(train_features).squeeze(-1)
        sd = float(s.std()) or 1.0
        head.weight /= sd
        head.bias.sub_(float(s.mean())).div_(sd)
    return head


def proxy_ensemble(
    train_features: torch.Tensor,
    pairs: Sequence[tuple[int, int]],
    members: int = 4,
    *,
    iters: int = 300,
    seed: int = 0,
) -> list[torch.nn.Linear]:
    """``members`` proxies, each fitted on a bootstrap resample of the same ``pairs`` (the same
    label budget as one proxy); combine their scores with ``mean`` or ``min`` (Coste et al.)."""
    rng = random.Random(f"ensemble-{seed}")
    m = len(pairs)
    return [
        fit_proxy(
            train_features, [pairs[rng.randrange(m)] for _ in range(m)], iters=iters, seed=seed + k
        )
        for k in range(members)
    ]


def proxy_reward_fn(gpt: torch.nn.Module, tokenizer, head: torch.nn.Linear):
    """``reward_fn(prompts, responses) -> (B,)``: the proxy ``head`` on ``gpt``'s frozen features
    (:func:`gptlib.rlhf.reward.response_features`), the reward a PPO run optimises."""
    from gptlib.rlhf.reward import response_features

    def reward_fn(prompts, responses) -> torch.Tensor:
        with torch.no_grad():
            feats = response_features(gpt, tokenizer, list(prompts), list(responses))
            return head(feats).squeeze(-1)

    return reward_fn


def head_state(head: torch.nn.Linear) -> dict:
    """A one-output linear head as plain numbers (``weight`` list, ``bias``), for meta.json."""
    if head.out_features != 1:
        raise ValueError(f"head_state stores a head with one output, got {head.out_features}")
    return {"weight": head.weight.detach().squeeze(0).tolist(), "bias": float(head.bias.detach())}


def head_from_state(state: dict) -> torch.nn.Linear:
    """The linear head :func:`head_state` stored."""
    w = torch.tensor(state["weight"], dtype=torch.float32)
    head = torch.nn.Linear(w.numel(), 1)
    with torch.no_grad():
        head.weight.copy_(w.unsqueeze(0))
        head.bias.fill_(float(state["bias"]))
    return head


@torch.no_grad()
def policy_point(
    lm,
    ref,
    tokenizer,
    world,
    prompts: Sequence,
    reward_fn,
    *,
    samples: int = 1,
    max_new_tokens: int = 64,
    seed: int = 0,
) -> dict:
    """Gold reward, proxy reward and KL to ``ref`` of the policy ``lm`` on held-out ``prompts``.

    ``samples`` responses per prompt at temperature 1 (drawn with a generator seeded ``seed``:
    the same seed at every checkpoint of a run gives common random numbers). The KL is the
    mean over the sampled responses of ``sum_t log lm(y_t) - log ref(y_t)``, an unbiased
    estimate of ``KL(lm || ref)`` in nats per response (0 exactly when ``lm`` is ``ref``).
    Returns means ``kl``, ``gold``, ``proxy`` and, per prompt, ``per_prompt_gold``.
    """
    from gptlib.rlhf.rollout import sample_with_kl

    if samples < 1 or not prompts:
        raise ValueError(f"policy_point needs prompts and samples >= 1, got {samples}")
    texts = [p.formatted for p in prompts for _ in range(samples)]
    eos = tokenizer.encode("\n")[0]
    gen = torch.Generator().manual_seed(seed)
    responses, kl = sample_with_kl(
        lm, ref, tokenizer, texts, max_new_tokens, eos_token=eos, generator=gen
    )
    proxy = torch.as_tensor(reward_fn(texts, responses)).double().cpu()
    gold = torch.tensor(
        [
            world.gold_reward(p, r)
            for p, r in zip([p for p in prompts for _ in range(samples)], responses)
        ],
        dtype=torch.float64,
    ).view(len(prompts), samples)
    return {
        "kl": float(kl.double().mean()),
        "gold": float(gold.mean()),
        "proxy": float(proxy.mean()),
        "per_prompt_gold": gold.mean(1).tolist(),
    }
