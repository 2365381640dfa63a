"""Did alignment help? Policies compared on held-out prompts by the world's gold reward.

The labeller of the toy world knows the truth (:meth:`~gptlib.rlhf.world.ToyWorld.gold_reward`),
so a policy can be scored the way InstructGPT's labellers scored theirs, without their noise:

- :func:`sample_gold`: replies of a policy to a fixed set of prompts and their gold rewards
  (``(prompts, samples)``, temperature 1 or greedy);
- :func:`paired_bootstrap`: the mean difference of two policies on the *same* prompts with a
  percentile bootstrap interval that resamples prompts in pairs;
- :func:`win_rate_of`: how often one policy's reply beats the other's (ties count one half);
- :func:`best_of_n`: the best-of-n reference line: of n samples keep the one a reward model
  prefers, and score it by gold.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from gptlib.stats import bootstrap_interval

__all__ = ["sample_gold", "paired_bootstrap", "win_rate_of", "best_of_n", "score_samples"]


def sample_gold(model: torch.nn.Module, tokenizer, world, prompts: Sequence, *,
                n_samples: int = 1, greedy: bool = False, seed: int = 0,
                max_new_tokens: int = 64) -> tuple[list[list[str]], torch.Tensor]:
    """``n_samples`` replies per prompt and their gold rewards ``(len(prompts), n_samples)``.

    Sampling (``greedy=False``) is at temperature 1, from a generator seeded with ``seed``, so
    two calls with the same seed draw the same replies.
    """
    from gptlib.rlhf.sft import generate_responses

    texts = [p.formatted for p in prompts]
    gen = torch.Generator().manual_seed(seed)
    replies = [generate_responses(model, tokenizer, texts, max_new_tokens, greedy=greedy,
                                  generator=gen) for _ in range(n_samples)]
    per_prompt = [[replies[j][i] for j in range(n_samples)] for i in range(len(prompts))]
    gold = torch.tensor([[world.gold_reward(p, r) for r in rs]
                         for p, rs in zip(prompts, per_prompt)], dtype=torch.float64)
    return per_prompt, gold


def paired_bootstrap(a: torch.Tensor | Sequence[float], b: torch.Tensor | Sequence[float], *,
                     n_resamples: int = 4000, level: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """``(mean(a - b), low, high)``: a percentile bootstrap interval over prompts.

    ``a[i]`` and ``b[i]`` are two policies' scores on prompt ``i`` (for several seeds or
    samples, average them per prompt first). The prompts are resampled in pairs, so the
    interval says how much the difference depends on which prompts made the test set.
    """
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape or a.dim() != 1 or a.numel() < 2:
        raise ValueError(f"need one score per prompt for both policies (>= 2 prompts), got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    return bootstrap_interval(a - b, n_resamples=n_resamples, seed=seed, level=level)


def win_rate_of(a: torch.Tensor | Sequence[float], b: torch.Tensor | Sequence[float]) -> float:
    """Share of prompts where score ``a`` beats ``b``; a tie counts one half."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"need equally many (>= 1) scores, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return float(((a > b).double() + 0.5 * (a == b).double()).mean())


def best_of_n(gold: torch.Tensor, proxy: torch.Tensor | None, n: int) -> torch.Tensor:
    """Per prompt, the gold reward of the sample (of the first ``n``) that ``proxy`` ranks best.

    ``gold`` and ``proxy`` are ``(prompts, samples)``; ``proxy=None`` picks by gold itself
    (the oracle: the headroom among the policy's own samples).
    """
    if n < 1 or n > gold.size(1):
        raise ValueError(f"n must be in 1..{gold.size(1)} (the samples per prompt), got {n}")
    judge = gold if proxy is None else torch.as_tensor(proxy)
    if judge.shape != gold.shape:
        raise ValueError(f"proxy {tuple(judge.shape)} and gold {tuple(gold.shape)} differ in shape")
    best = judge[:, :n].argmax(dim=1)
    return gold[torch.arange(gold.size(0)), best]


def score_samples(reward_fn: Callable, prompts: Sequence, replies: Sequence[Sequence[str]]
                  ) -> torch.Tensor:
    """``(prompts, samples)`` proxy rewards of ``replies[i][j]`` by ``reward_fn`` (one call)."""
    flat_p = [p.formatted for p, rs in zip(prompts, replies) for _ in rs]
    flat_r = [r for rs in replies for r in rs]
    scores = torch.as_tensor(reward_fn(flat_p, flat_r)).double().cpu()
    return scores.reshape(len(prompts), -1)

